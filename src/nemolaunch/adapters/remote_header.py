"""A model's architecture from the Hub without downloading its weights.

The first few MB of a quant's first shard hold the whole GGUF header (hyperparameters, layer
kinds, tokenizer). They are fetched with one Range request, doubled until the header fits, and
what they say is kept in the user cache, keyed by repository, file and size, so a plan asks the
Hub for them once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nemolaunch.adapters.gguf_header import GGUFHeader, architecture_of, header_from_prefix
from nemolaunch.adapters.header_cache import entry, load, save
from nemolaunch.core.forecast import ArchitectureFacts

log = logging.getLogger(__name__)

FIRST_READ_BYTES = 8 * 1024 * 1024
#: Past this a "header" is not one: give up rather than download weights.
MAX_READ_BYTES = 256 * 1024 * 1024


def remote_architecture(
    repo: str, path: str, *, file_size: int, cache_dir: Path | None = None
) -> ArchitectureFacts | None:
    """Architecture facts of ``repo``'s ``path`` (a first shard) from its header on the Hub; None if unknown.

    ``file_size`` need only be at least the file's size (a quant's total size will do): the
    header is parsed inside a sparse file that long.
    """
    cached = entry(f"{repo}/{path}/{file_size}", cache_dir)
    header = load(cached)
    if header is None:
        header = _fetch_header(repo, path, file_size)
        if header is None:
            return None
        save(cached, header)
    return architecture_of(header, where=f"{repo}/{path}")


def _fetch_header(repo: str, path: str, file_size: int) -> GGUFHeader | None:
    from nemolaunch.adapters.hub_listing import fetch_file_prefix

    wanted = min(FIRST_READ_BYTES, file_size)
    while True:
        try:
            prefix = fetch_file_prefix(repo, path, wanted)
        except Exception as exc:  # any Hub, HTTP or network error: the forecast goes on without the header
            log.debug("could not read the header of %s/%s: %s", repo, path, exc)
            return None
        header = header_from_prefix(prefix, file_size)
        if header is not None or wanted >= min(MAX_READ_BYTES, file_size) or len(prefix) < wanted:
            return header
        wanted = min(wanted * 2, MAX_READ_BYTES, file_size)

"""A model's architecture from the Hub without downloading its weights.

The first few MB of a quant's first shard hold the whole GGUF header (hyperparameters, layer
kinds, tokenizer). They are read with one Range request, looked at once 8 MiB have come and again
each time that doubles, and the request ends as soon as the header parses, so a header past 8 MiB
costs no second request and no byte twice. (A first look at fewer bytes would cost more than it
saves: each look is a parse, and the ``gguf`` reader takes seconds over a large vocabulary, 3.4 s
for 250,000 tokens here, where 8 MiB take 0.2 s at 40 MB/s.) What they say is kept in the user
cache, keyed by repository, file and size, so a plan asks the Hub for them once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nemolaunch.adapters.gguf_header import (
    GGUF_MAGIC,
    GGUFHeader,
    architecture_of,
    header_from_prefix,
    load_cached,
    save_cached,
)
from nemolaunch.adapters.header_cache import entry
from nemolaunch.core.forecast import ArchitectureFacts
from nemolaunch.errors import HubTooSlow, MalformedGGUF
from nemolaunch.hub.deadline import DEFAULT_HUB_DEADLINE_S

log = logging.getLogger(__name__)

FIRST_LOOK_BYTES = 8 * 1024 * 1024
#: Past this a "header" is not one: give up rather than download weights.
MAX_READ_BYTES = 256 * 1024 * 1024


def remote_architecture(
    repo: str, path: str, *, file_size: int, cache_dir: Path | None = None, deadline_s: float = DEFAULT_HUB_DEADLINE_S
) -> ArchitectureFacts | None:
    """Architecture facts of ``repo``'s ``path`` (a first shard) from its header on the Hub; None if unknown.

    ``file_size`` need only be at least the file's size (a quant's total size will do): the
    header is parsed inside a sparse file that long. A header read slower than ``deadline_s`` in all
    is refused (HubTooSlow), as is a malformed header.
    """
    cached = entry(f"{repo}/{path}/{file_size}", cache_dir)
    header = load_cached(cached)
    if header is None:
        header = _fetch_header(repo, path, file_size, deadline_s)
        if header is None:
            return None
        save_cached(cached, header)
    return architecture_of(header, where=f"{repo}/{path}")


def _fetch_header(repo: str, path: str, file_size: int, deadline_s: float) -> GGUFHeader | None:
    from nemolaunch.hub.listing import read_file_prefix

    def take(prefix: bytes) -> GGUFHeader | None:
        if not prefix.startswith(GGUF_MAGIC[: len(prefix)]):
            raise _NotGGUF
        return header_from_prefix(prefix, file_size, where=f"{repo}/{path} on the Hub")

    try:
        return read_file_prefix(
            repo,
            path,
            limit=min(MAX_READ_BYTES, file_size),
            first_look=min(FIRST_LOOK_BYTES, file_size),
            take=take,
            deadline_s=deadline_s,
        )
    except _NotGGUF:
        log.debug("%s/%s is not a GGUF file", repo, path)
    except (MalformedGGUF, HubTooSlow):
        # No longer read would mend a malformed header, and what it claims must not be planned with;
        # a trickle would hold the plan for ever, and planning on without it would hide why it is slow.
        raise
    except Exception as exc:  # any Hub, HTTP or network error: the forecast goes on without the header
        log.debug("could not read the header of %s/%s: %s", repo, path, exc)
    return None


class _NotGGUF(Exception):
    """The first bytes are not a GGUF file's: reading more will not make them one."""

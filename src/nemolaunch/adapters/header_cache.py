"""Headers already read, kept in the user cache: a plan or a launch does not parse the same GGUF twice.

Reading a header needs the gguf reader and numpy (a fifth of a second before any byte is read); a
person restarts `nemolaunch serve` on the same model many times. A local file's entry is keyed by its
path, size and modification time, so a file that changes is read again; a Hub file's by repository,
path and size.

It stores JSON entries and knows nothing of what they mean: :mod:`gguf_header` turns a header into an
entry and back, so the reader depends on its cache and not the other way round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("nemolaunch") / "headers"


def entry(key: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def local_key(path: Path) -> str:
    info = path.stat()
    return f"local\0{path.resolve()}\0{info.st_size}\0{info.st_mtime_ns}"


def load(path: Path) -> dict[str, Any] | None:
    """The entry at ``path``, or None when there is none or it is not a JSON object."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def save(path: Path, entry: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(entry, default=_plain)
        # Atomic: a reader never sees half a cache entry.
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(payload)
        os.replace(handle.name, path)
    except (OSError, TypeError, ValueError) as exc:
        log.debug("could not cache a header in %s: %s", path, exc)


def _plain(value: object) -> object:
    # numpy scalars and arrays from the gguf reader
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")

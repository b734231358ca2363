"""The tensor cache of llama.cpp's rpc-server (``rpc-server -c``): where it is, what it holds.

How llama.cpp uses it (ggml/src/ggml-rpc/ggml-rpc.cpp, 0c1e570): a weight tensor of more than
``HASH_THRESHOLD`` bytes is first sent as the 64-bit FNV-1a hash of its bytes; a worker holding the
file ``<cache folder>/<hash as 16 lower-case hex digits>`` loads it from its own disk and the head
sends nothing more; otherwise the head sends the bytes and the worker writes that file. rpc-server
puts the folder at ``$LLAMA_CACHE/rpc``, else the user cache folder's ``llama.cpp/rpc``
(tools/rpc/rpc-server.cpp). The folder is never pruned by llama.cpp: its size is shown, not hidden.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: ggml-rpc.cpp's HASH_THRESHOLD: tensors over this many bytes go by hash first.
HASH_THRESHOLD = 10 * 1024 * 1024


def cache_folder(env: dict[str, str] | None = None) -> Path:
    """The folder rpc-server -c uses under this environment."""
    env = dict(os.environ) if env is None else env
    if env.get("LLAMA_CACHE"):
        return Path(env["LLAMA_CACHE"]) / "rpc"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "llama.cpp" / "rpc"
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llama.cpp" / "rpc"


def llama_cache_env(folder: Path) -> dict[str, str]:
    """The variable that makes rpc-server use ``folder`` (which must be ``<something>/rpc``)."""
    return {"LLAMA_CACHE": str(folder.parent)}


@dataclass(frozen=True)
class CacheContents:
    folder: Path
    tensors: int
    total_bytes: int


def is_cache_name(name: str) -> bool:
    return len(name) == 16 and all(char in "0123456789abcdef" for char in name)


def read_contents(folder: Path) -> CacheContents:
    """How many cached tensors the folder holds, and their bytes (0 and 0 where it does not exist)."""
    tensors = total = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if is_cache_name(entry.name) and entry.is_file(follow_symlinks=False):
            tensors += 1
            total += entry.stat(follow_symlinks=False).st_size
    return CacheContents(folder, tensors, total)


def cache_file_name(hash_value: int) -> str:
    """As rpc-server names it: ``snprintf("%016" PRIx64)``."""
    return f"{hash_value:016x}"

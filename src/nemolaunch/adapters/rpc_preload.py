"""Seeding a worker's tensor cache from its own copy of the model (``rpc-worker --preload``).

Every tensor over ``HASH_THRESHOLD`` is written as ``<cache folder>/<FNV-1a 64 of its bytes, 16 hex
digits>``, the file rpc-server looks for when the head sends that hash (see ``rpc_cache``): the
head's first load then sends hashes, not weights. The tensors are found with the gguf package
(their data offsets and sizes in each shard); their bytes are hashed and copied straight from the
file's mapping, never read whole into memory. FNV-1a runs in C (the fnv-c package): it is a byte
at a time, ~0.9 GB/s, the same as llama.cpp's own.

A file is written beside its final name and renamed into place, so a killed preload never leaves a
half tensor that rpc-server would load as whole. Hashes already computed are kept in an index
beside the tensors (by shard, size and modification time), so a second preload of the same copy
costs only a look at the folder.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nemolaunch.adapters.rpc_cache import HASH_THRESHOLD, cache_file_name
from nemolaunch.core.download_plan import human_bytes
from nemolaunch.errors import RpcCacheNoSpace

#: Kept free beside the cache on the worker's disk, for the system and llama.cpp's own files.
DISK_MARGIN_BYTES = 1024**3
INDEX_NAME = "nemolaunch-preload-index.json"


@dataclass(frozen=True)
class BigTensor:
    """One tensor the head will send by hash: where its bytes are in which shard."""

    shard: Path
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class SeedResult:
    tensors: int
    written: int  # tensors written this run
    present: int  # tensors whose file was there already
    written_bytes: int
    total_bytes: int  # of every tensor over the threshold


def big_tensors(shards: tuple[Path, ...]) -> list[BigTensor]:
    """Every tensor over the threshold, in every shard, in file order."""
    from gguf import GGUFReader

    found = []
    for shard in shards:
        reader = GGUFReader(str(shard))
        for tensor in reader.tensors:
            size = int(tensor.n_bytes)
            if size > HASH_THRESHOLD:
                found.append(BigTensor(shard, tensor.name, int(tensor.data_offset), size))
        del reader  # its mapping: closed before the next shard is opened
    return found


def seed_cache(
    tensors: list[BigTensor], folder: Path, *, on_tensor: Callable[[int, BigTensor, bool], None] | None = None
) -> SeedResult:
    """Write every tensor of ``tensors`` under its hash in ``folder``; check the disk first."""
    folder.mkdir(parents=True, exist_ok=True)
    index = _read_index(folder)
    known = {key: index[key] for key in (_key(tensor) for tensor in tensors) if key in index}
    present_known = {key for key, name in known.items() if (folder / name).is_file()}
    needed = sum(tensor.size for tensor in tensors if _key(tensor) not in present_known)
    free = shutil.disk_usage(folder).free
    if needed + DISK_MARGIN_BYTES > free:
        raise RpcCacheNoSpace(
            folder=str(folder),
            needed=human_bytes(needed),
            free=human_bytes(free),
            margin=human_bytes(DISK_MARGIN_BYTES),
            needed_bytes=needed,
            free_bytes=free,
        )
    written = present = written_bytes = 0
    maps: dict[Path, tuple[object, mmap.mmap]] = {}
    try:
        for number, tensor in enumerate(tensors):
            key = _key(tensor)
            if key in present_known:
                present += 1
                if on_tensor:
                    on_tensor(number, tensor, False)
                continue
            if tensor.shard not in maps:
                handle = tensor.shard.open("rb")
                maps[tensor.shard] = (handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
            view = memoryview(maps[tensor.shard][1])[tensor.offset : tensor.offset + tensor.size]
            try:
                name = cache_file_name(fnv1a_64(view))
                target = folder / name
                if target.is_file() and target.stat().st_size == tensor.size:
                    present += 1
                else:
                    _write_whole(target, view)
                    written += 1
                    written_bytes += tensor.size
            finally:
                view.release()
            index[key] = name
            _write_index(folder, index)
            if on_tensor:
                on_tensor(number, tensor, True)
    finally:
        for handle, mapping in maps.values():
            mapping.close()
            handle.close()  # type: ignore[attr-defined]
    return SeedResult(len(tensors), written, present, written_bytes, sum(tensor.size for tensor in tensors))


def fnv1a_64(data: memoryview | bytes) -> int:
    """The 64-bit FNV-1a of ``data``, as ggml-rpc.cpp's ``fnv_hash`` computes it (basis 0xcbf29ce484222325)."""
    from fnv_c.ext._fnv import ffi, lib

    return int(lib.fnv1a_64(ffi.from_buffer(data), len(data)))


def _write_whole(target: Path, data: memoryview) -> None:
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as out:
            out.write(data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _key(tensor: BigTensor) -> str:
    stat = tensor.shard.stat()
    return f"{tensor.shard.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{tensor.name}|{tensor.offset}|{tensor.size}"


def _read_index(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in data.items() if isinstance(value, str)} if isinstance(data, dict) else {}


def _write_index(folder: Path, index: dict[str, str]) -> None:
    partial = folder / f".{INDEX_NAME}.partial-{os.getpid()}"
    partial.write_text(json.dumps(index, indent=0))
    os.replace(partial, folder / INDEX_NAME)

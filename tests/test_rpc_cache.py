"""rpc-worker's tensor cache seeding, without processes: the hash, the files, a second preload."""

from __future__ import annotations

from pathlib import Path

from nemolaunch.adapters.rpc_cache import HASH_THRESHOLD, is_cache_name, read_contents
from nemolaunch.adapters.rpc_preload import big_tensors, fnv1a_64, seed_cache
from nemolaunch.scaled_model import ScaledShape, write_scaled_model


def test_fnv1a_64_is_the_published_function() -> None:
    # The FNV-1a 64 test vectors (the offset basis for no bytes; "a" and "foobar" from the reference suite).
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_seeding_writes_each_big_tensor_under_its_hash_once(tmp_path: Path) -> None:
    model = write_scaled_model(tmp_path / "scaled.gguf", ScaledShape(n_embd=1024, blocks=1))
    tensors = big_tensors((model,))
    assert tensors and all(tensor.size > HASH_THRESHOLD for tensor in tensors)
    folder = tmp_path / "cache" / "rpc"
    first = seed_cache(tensors, folder)
    assert (first.tensors, first.written, first.present) == (len(tensors), len(set(map(_hash, tensors))), 0)
    names = sorted(path.name for path in folder.iterdir() if is_cache_name(path.name))
    assert names == sorted({f"{_hash(tensor):016x}" for tensor in tensors})
    # Each file holds exactly the tensor's bytes, and nothing half-written is left beside them.
    data = model.read_bytes()
    for tensor in tensors:
        assert (folder / f"{_hash(tensor):016x}").read_bytes() == data[tensor.offset : tensor.offset + tensor.size]
    assert not [path for path in folder.iterdir() if "partial" in path.name]
    assert read_contents(folder).total_bytes == sum({_hash(tensor): tensor.size for tensor in tensors}.values())
    # A second preload of the same copy hashes nothing and writes nothing.
    second = seed_cache(tensors, folder)
    assert (second.written, second.present, second.written_bytes) == (0, len(tensors), 0)


def _hash(tensor) -> int:
    with tensor.shard.open("rb") as handle:
        handle.seek(tensor.offset)
        return fnv1a_64(handle.read(tensor.size))

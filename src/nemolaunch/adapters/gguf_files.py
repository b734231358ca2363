"""Cheap checks on a local GGUF model before llama-server spends minutes loading it.

The header is read by ``gguf_header`` with the ``gguf`` package (never by
hand): it memory-maps the file, so even a 50 GB shard costs only its metadata.
A file whose tensor data runs past its end makes the reader fail, which is how
a truncated download shows up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nemolaunch.adapters.gguf_header import read_gguf_header
from nemolaunch.core.split_names import parse_split_name
from nemolaunch.errors import BadOption, ModelFileMissing, ShardsMissing


@dataclass(frozen=True)
class ModelFile:
    """What the launcher needs to know about a local model."""

    path: Path  # the file to hand llama.cpp: the first shard of a split model
    shards: tuple[Path, ...]
    architecture: str | None
    general_name: str | None
    context_length: int | None  # the training context, the largest sensible --ctx-size

    @property
    def size_bytes(self) -> int:
        return sum(shard.stat().st_size for shard in self.shards)


def split_shards(path: Path) -> tuple[Path, ...] | None:
    """Every shard's path for a ``-0000K-of-0000N.gguf`` name; None for a single file."""
    split = parse_split_name(path.name)
    if split is None:
        return None
    return tuple(path.with_name(split.name_of(index)) for index in range(1, split.count + 1))


def inspect_model(path: Path) -> ModelFile:
    """Check that ``path`` is a complete GGUF model (every shard present and whole).

    For a split model any shard may be named; the result points at the first,
    which is the one llama.cpp must be given.
    """
    path = path.expanduser()
    if path.is_dir():
        raise BadOption(
            option="--model", value=str(path), hint="it is a folder; name the .gguf file (any shard of a split model)"
        )
    if not path.is_file():
        raise ModelFileMissing(path=str(path))
    shards = split_shards(path) or (path,)
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ShardsMissing(path=str(path), missing=missing, total=len(shards))
    header = None
    for shard in shards:
        fields = _read_header(shard)
        if header is None:
            header = fields
    assert header is not None
    architecture = _string(header, "general.architecture")
    return ModelFile(
        path=shards[0],
        shards=shards,
        architecture=architecture,
        general_name=_string(header, "general.name"),
        context_length=_integer(header, f"{architecture}.context_length") if architecture else None,
    )


def _read_header(path: Path) -> dict[str, object]:
    return read_gguf_header(path).metadata


def _string(fields: dict[str, object], key: str) -> str | None:
    value = fields.get(key)
    return value if isinstance(value, str) else None


def _integer(fields: dict[str, object], key: str) -> int | None:
    value = fields.get(key)
    return int(value) if isinstance(value, int) else None

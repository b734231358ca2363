"""Read the architecture facts the memory forecast needs from a local GGUF header.

The ``gguf`` package does the reading (memory-mapped, so a 50 GB first shard
costs only its metadata); ``nemolaunch.core.forecast`` interprets the values.
Only the first shard of a split model carries the model's metadata.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemolaunch.adapters import header_cache
from nemolaunch.core.forecast import ArchitectureFacts, architecture_from_metadata
from nemolaunch.errors import BadOption, ModelFileMissing, NotGGUF, TruncatedGGUF

if TYPE_CHECKING:
    from gguf import GGUFReader

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_TOKENS_KEY = "tokenizer.ggml.tokens"
#: Keys outside the architecture's own namespace that callers need.
_GENERAL_KEYS = ("general.name", "split.count", "split.no")


@dataclass(frozen=True)
class TensorTotals:
    """One file's tensor table, summed: what the speed forecast needs of a local model's weights."""

    parameters: int
    weights_bytes: int
    expert_bytes: int  # of which routed experts (ffn_*_exps)


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, object]  # general.architecture, general.name, split.*, and every "<arch>.*" key
    token_count: int | None  # the vocabulary size, from the token list's length
    tensors: TensorTotals | None = None  # from a whole local file (not from a remote prefix)

    def to_entry(self) -> dict[str, Any]:
        """The header as a header-cache entry."""
        tensors = vars(self.tensors) if self.tensors is not None else None
        return {"metadata": self.metadata, "token_count": self.token_count, "tensors": tensors}

    @classmethod
    def from_entry(cls, entry: dict[str, Any] | None) -> GGUFHeader | None:
        """A header back from its cache entry; None for no entry or one this version cannot read."""
        if entry is None:
            return None
        try:
            tensors = entry.get("tensors")
            return cls(
                metadata=dict(entry["metadata"]),
                token_count=entry["token_count"],
                tensors=TensorTotals(**tensors) if tensors is not None else None,
            )
        except (ValueError, KeyError, TypeError):
            return None


def load_cached(entry_path: Path) -> GGUFHeader | None:
    return GGUFHeader.from_entry(header_cache.load(entry_path))


def save_cached(entry_path: Path, header: GGUFHeader) -> None:
    header_cache.save(entry_path, header.to_entry())


def open_reader(path: Path) -> GGUFReader:
    """gguf's reader of ``path``, reading through a plain array view of the file's mapping.

    The reader slices its array once or twice for every item of every key: a vocabulary's header
    holds a million items, and a slice of numpy's memmap subclass costs its ``__array_finalize__``
    each time, a plain view's does not (an 8.4 MB header, 131,072 tokens and 260,000 merges: 6.9 s
    through the memmap, 2.3 s through the view, measured here). Nothing else changes: the same
    reader parses the same bytes (numpy-heavy, so imported only when a header is read).
    """
    return _plain_view_reader()(path)


@functools.cache
def _plain_view_reader() -> type[GGUFReader]:
    import numpy as np
    from gguf import GGUFReader

    class PlainViewReader(GGUFReader):
        @property  # type: ignore[override]
        def data(self) -> np.ndarray:
            return self._plain

        @data.setter
        def data(self, mapped: np.ndarray) -> None:
            self._plain = mapped.view(np.ndarray)  # the view keeps the mapping alive

    return PlainViewReader


def read_gguf_header(path: Path) -> GGUFHeader:
    """The architecture keys of ``path``'s header. Raises ModelFileMissing, NotGGUF or TruncatedGGUF."""
    if not path.is_file():
        raise ModelFileMissing(path=str(path))
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise BadOption(option="--model", value=str(path), hint=f"it cannot be read ({exc.strerror or exc})") from exc
    if magic != GGUF_MAGIC:
        raise NotGGUF(path=str(path), magic=magic)
    cached = header_cache.entry(header_cache.local_key(path))
    header = load_cached(cached)
    if header is not None:
        return header  # read whole before, and unchanged since (size and modification time)
    try:
        reader = open_reader(path)
    except (ValueError, IndexError, OSError) as exc:
        raise TruncatedGGUF(path=str(path), reason=_truncation_reason(exc)) from exc
    header = _header_of(reader, with_tensors=True)
    save_cached(cached, header)
    return header


def _header_of(reader: GGUFReader, *, with_tensors: bool = False) -> GGUFHeader:
    metadata: dict[str, object] = {}
    for key in _GENERAL_KEYS:
        if key in reader.fields:
            metadata[key] = reader.fields[key].contents()
    architecture_field = reader.fields.get("general.architecture")
    if architecture_field is not None:
        architecture = architecture_field.contents()
        metadata["general.architecture"] = architecture
        prefix = f"{architecture}."
        for key, field in reader.fields.items():
            if key.startswith(prefix):
                metadata[key] = field.contents()
    tokens = reader.fields.get(_TOKENS_KEY)
    totals = None
    if with_tensors:
        totals = TensorTotals(
            parameters=sum(int(tensor.n_elements) for tensor in reader.tensors),
            weights_bytes=sum(int(tensor.n_bytes) for tensor in reader.tensors),
            expert_bytes=sum(int(tensor.n_bytes) for tensor in reader.tensors if "_exps." in tensor.name),
        )
    return GGUFHeader(metadata=metadata, token_count=len(tokens.data) if tokens is not None else None, tensors=totals)


def read_architecture(path: Path) -> ArchitectureFacts | None:
    """Architecture facts from ``path``'s header; None when it lacks what the forecast needs."""
    return architecture_of(read_gguf_header(path), where=str(path))


def header_from_prefix(prefix: bytes, file_size: int) -> GGUFHeader | None:
    """The header of a GGUF file of ``file_size`` bytes from its first bytes only; None if they are too few.

    The ``gguf`` reader wants a whole file, so the prefix goes into a sparse file of the full size:
    the reader maps it and parses the header without touching the (absent) tensor data. The parse
    is trusted only when everything it read lies inside the prefix (``data_offset`` within it):
    past the prefix a sparse file reads as zeros, which would otherwise parse as nonsense.
    """
    import tempfile

    if prefix[:4] != GGUF_MAGIC:
        return None
    with tempfile.TemporaryDirectory(prefix="nemolaunch-header-") as folder:
        sparse = Path(folder) / "head.gguf"
        try:
            with sparse.open("wb") as handle:
                handle.write(prefix)
                handle.truncate(max(file_size, len(prefix)))
            reader = open_reader(sparse)
        except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as exc:
            log.debug("a %d-byte prefix is not enough for the header: %s", len(prefix), exc)
            return None
        if reader.data_offset > len(prefix):
            return None
        return _header_of(reader)


def architecture_of(header: GGUFHeader, *, where: str) -> ArchitectureFacts | None:
    try:
        return architecture_from_metadata(header.metadata, token_count=header.token_count)
    except ValueError as exc:
        log.debug("%s: no architecture facts for the forecast: %s", where, exc)
        return None


def _truncation_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # numpy's words when a tensor's data runs past the end of the file.
    if "reshape" in text or "divisor" in text or "buffer" in text:
        return "its tensor data ends before the header says it should"
    return text


@dataclass(frozen=True)
class WeightFacts:
    """What a local model's tensors say about the bytes each token reads."""

    parameters: int
    weights_bytes: int  # the tensors' bytes, every shard
    expert_bytes: int  # of which routed experts (ffn_*_exps)
    expert_count: int
    expert_used_count: int

    @property
    def bits_per_weight(self) -> float | None:
        return self.weights_bytes * 8 / self.parameters if self.parameters else None

    @property
    def active_share(self) -> float:
        """Shared tensors whole, routed experts at used/count: the share of the weights a token reads."""
        if not self.weights_bytes:
            return 1.0
        routed = self.expert_used_count / self.expert_count if self.expert_count else 1.0
        shared = self.weights_bytes - self.expert_bytes
        return (shared + self.expert_bytes * routed) / self.weights_bytes


def read_weight_facts(shards: tuple[Path, ...]) -> WeightFacts:
    """Count parameters and bytes over every shard's tensor table (headers only: no weights are read).

    Each shard's totals come with its header, from the header cache when the file is unchanged: the
    gguf reader takes seconds over a large vocabulary's header (7.6 s for 131,072 tokens and 260,000
    merges here), which a plan or launch of the same model would otherwise pay every time.
    """
    parameters = weights = experts = 0
    expert_count = expert_used = 0
    for shard in shards:
        header = _header_with_tensors(shard)
        arch = header.metadata.get("general.architecture")
        if isinstance(arch, str):
            expert_count = int(header.metadata.get(f"{arch}.expert_count", expert_count) or 0)
            expert_used = int(header.metadata.get(f"{arch}.expert_used_count", expert_used) or 0)
        assert header.tensors is not None
        parameters += header.tensors.parameters
        weights += header.tensors.weights_bytes
        experts += header.tensors.expert_bytes
    return WeightFacts(parameters, weights, experts, expert_count, expert_used)


def _header_with_tensors(shard: Path) -> GGUFHeader:
    header = read_gguf_header(shard)
    if header.tensors is not None:
        return header
    # A cache entry from before tensor totals were kept: read the file again, and keep them this time.
    try:
        reader = open_reader(shard)
    except (ValueError, IndexError, OSError) as exc:
        raise TruncatedGGUF(path=str(shard), reason=_truncation_reason(exc)) from exc
    header = _header_of(reader, with_tensors=True)
    save_cached(header_cache.entry(header_cache.local_key(shard)), header)
    return header

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
from nemolaunch.errors import BadOption, MalformedGGUF, ModelFileMissing, NotGGUF, TruncatedGGUF

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


def open_reader(path: Path, *, readable_bytes: int | None = None) -> GGUFReader:
    """gguf's reader of ``path``, reading through a plain array view of the file's mapping, bounded.

    The reader slices its array once or twice for every item of every key: a vocabulary's header
    holds a million items, and a slice of numpy's memmap subclass costs its ``__array_finalize__``
    each time, a plain view's does not (an 8.4 MB header, 131,072 tokens and 260,000 merges: 6.9 s
    through the memmap, 2.3 s through the view, measured here).

    The reader trusts every count and length it reads: a 133-byte file claiming an array of 2^40
    items sends it looping (each read past the end is an empty slice that advances nothing) until
    memory runs out. So every read here is checked against the bytes the file holds (raising
    MalformedHeader) and, with ``readable_bytes``, against the bytes known so far (raising
    NeedMoreBytes: the rest of a remote prefix is not here yet); an array's count is checked before
    its items are read, and the header's items are capped in all.
    """
    return _plain_view_reader()(path, readable_bytes=readable_bytes)


class MalformedHeader(ValueError):
    """The header claims more than the file holds, or repeats a key: no amount of bytes will mend it."""


class NeedMoreBytes(ValueError):
    """The header reads on past the bytes known so far (a remote prefix): a longer prefix may parse."""


class _TensorDataShort(ValueError):
    """The header is whole, the tensor data it describes is not: a file cut short."""


#: Items (array elements and values) one header may hold: the largest real vocabularies (262,144
#: tokens with their scores and types, 500,000 merges) hold under 2 million. The reader keeps a
#: small array for each item, so a consistent header of 100 million 1-byte items would still cost
#: gigabytes without a cap.
MAX_HEADER_ITEMS = 8 * 1024 * 1024


@functools.cache
def _plain_view_reader() -> type[GGUFReader]:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType

    # The fewest bytes one item of each type takes: a string is at least its 8-byte length, an array
    # at least its 4-byte type and 8-byte count.
    smallest = {kind: np.dtype(dtype).itemsize for kind, dtype in GGUFReader.gguf_scalar_to_np.items()}
    smallest[GGUFValueType.STRING] = 8
    smallest[GGUFValueType.ARRAY] = 12
    array_type = int(GGUFValueType.ARRAY)  # an enum's attribute costs a lookup per item on Python 3.11
    parts_of = GGUFReader._get_field_parts
    itemsizes = {dtype: np.dtype(dtype).itemsize for dtype in GGUFReader.gguf_scalar_to_np.values()}

    class BoundedReader(GGUFReader):
        def __init__(self, path: Path, *, readable_bytes: int | None = None) -> None:
            self._readable = readable_bytes
            self._items = 0
            try:
                super().__init__(path)
            except (MalformedHeader, NeedMoreBytes, _TensorDataShort):
                raise
            except ValueError as exc:  # a key that is not UTF-8, a type no GGUF has: read whole, and wrong
                raise MalformedHeader(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None

        @property  # type: ignore[override]
        def data(self) -> np.ndarray:
            return self._plain

        @data.setter
        def data(self, mapped: np.ndarray) -> None:
            self._plain = mapped.view(np.ndarray)  # the view keeps the mapping alive

        def _check_room(self, offset: int, needed: int, what: str) -> None:
            size = len(self._plain)
            if needed < 0 or offset + needed > size:
                raise MalformedHeader(f"{what} at byte {offset:,} would end past the file's end at byte {size:,}")
            if self._readable is not None and offset + needed > self._readable:
                raise NeedMoreBytes(f"{what} at byte {offset:,} reads past byte {self._readable:,}")

        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> np.ndarray:
            # gguf's own _get, with the bound: called for every item, so nothing more is done per call
            # (a check through _check_room and its words made a vocabulary's header 3x slower).
            count = int(count)
            itemsize = itemsizes.get(dtype) or np.dtype(dtype).itemsize
            end = offset + itemsize * count
            if count < 0 or end > (len(self._plain) if self._readable is None else self._readable):
                self._check_room(offset, itemsize * count, f"a value of {count:,} items")
            array = self._plain[offset:end].view(dtype=dtype)[:count]
            return array.view(array.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

        def _get_str(self, offset: int) -> tuple[np.ndarray, np.ndarray]:
            length = self._get(offset, np.uint64)
            if offset + 8 + int(length[0]) > len(self._plain):
                self._check_room(offset + 8, int(length[0]), f"a string of {int(length[0]):,} bytes")
            return length, self._get(offset + 8, np.uint8, length[0])

        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            # The header is read: a prefix's tensor data lies past it by design (sparse, never read).
            self._readable = None
            try:
                super()._build_tensors(start_offs, fields)
            except MalformedHeader as exc:
                raise _TensorDataShort(f"its tensor data ends before the header says it should ({exc})") from None

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            self._items += 1
            if self._items > MAX_HEADER_ITEMS:
                raise MalformedHeader(f"it holds more than {MAX_HEADER_ITEMS:,} items")
            if raw_type == array_type:
                item_type = int(self._get(orig_offs, np.uint32)[0])
                count = int(self._get(orig_offs + 4, np.uint64)[0])
                if item_type not in smallest:
                    raise MalformedHeader(f"an array of unknown type {item_type}")
                self._check_room(orig_offs + 12, count * smallest[item_type], f"an array of {count:,} items")
            return parts_of(self, orig_offs, raw_type)

        def _build_fields(self, offs: int, count: int) -> int:
            self._check_room(offs, int(count) * 13, f"{int(count):,} keys")  # each at least a length, a type, a byte
            return super()._build_fields(offs, count)

        def _build_tensor_info(self, offs: int, count: int) -> Any:
            self._check_room(offs, int(count) * 24, f"{int(count):,} tensors")  # name length, dims, type, offset
            return super()._build_tensor_info(offs, count)

        def _push_field(self, field: Any, skip_sum: bool = False) -> int:
            if field.name in self.fields:
                raise MalformedHeader(f"the key {field.name} appears twice")
            return super()._push_field(field, skip_sum)

    return BoundedReader


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
    header = _header_of(_open_local(path), with_tensors=True)
    save_cached(cached, header)
    return header


def _open_local(path: Path) -> GGUFReader:
    try:
        return open_reader(path)
    except MalformedHeader as exc:
        raise MalformedGGUF(path=str(path), reason=str(exc)) from exc
    except (ValueError, IndexError, OSError) as exc:
        raise TruncatedGGUF(path=str(path), reason=_truncation_reason(exc)) from exc


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


def header_from_prefix(prefix: bytes, file_size: int, *, where: str = "the file") -> GGUFHeader | None:
    """The header of a GGUF file of ``file_size`` bytes from its first bytes only; None if they are too few.

    The ``gguf`` reader wants a whole file, so the prefix goes into a sparse file of the full size:
    the reader maps it and parses the header without touching the (absent) tensor data. Every read
    of the header is bounded by the prefix (past it a sparse file reads as zeros, which would parse
    as nonsense) and every count by ``file_size``: a header that cannot fit even the whole file
    raises MalformedGGUF (naming ``where``), since no longer prefix would mend it.
    """
    from nemolaunch.adapters.header_scratch import scratch_folder

    if prefix[:4] != GGUF_MAGIC:
        return None
    with scratch_folder() as folder:
        sparse = folder / "head.gguf"
        try:
            with sparse.open("wb") as handle:
                handle.write(prefix)
                handle.truncate(max(file_size, len(prefix)))
            reader = open_reader(sparse, readable_bytes=len(prefix))
        except MalformedHeader as exc:
            raise MalformedGGUF(path=where, reason=str(exc)) from exc
        except (ValueError, IndexError, KeyError, OSError) as exc:
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
    header = _header_of(_open_local(shard), with_tensors=True)
    save_cached(header_cache.entry(header_cache.local_key(shard)), header)
    return header

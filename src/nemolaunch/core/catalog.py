"""The quant catalog: which GGUF quants a repository offers, how big each is, in quality order.

Input is a plain list of ``(path, size)`` entries, so the same code serves the
Hub's listing, a scan of the local HF cache and the built-in tables below. GGUF
files are grouped into quants by their folder (Unsloth's ``UD-IQ3_XXS/...`` layout) or, in flat repositories, by
the quant tag at the end of the file name (``Model-Q4_K_M.gguf``). Split models
(``-00001-of-00006.gguf``) count only when every shard is listed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from nemolaunch import ULTRA_REPO
from nemolaunch.errors import (
    MalformedModelReference,
    NoGGUFInRepo,
    QuantIncomplete,
    UnknownQuant,
)

CatalogSource = Literal["hub", "cache", "builtin", "local"]

SUPER_REPO = "unsloth/NVIDIA-Nemotron-3-Super-120B-A12B-GGUF"
NANO_REPO = "unsloth/Nemotron-3-Nano-30B-A3B-GGUF"

#: Nominal bits per weight of each quant type, used only to put quants in
#: quality order (file sizes are what memory planning uses). K_L/K_XL are the
#: mixed recipes (Unsloth's dynamic ones among them) that keep sensitive
#: tensors at higher precision, so they rank just above their K_M sibling and
#: below the next type up; the ``UD-`` prefix does not change a quant's rank.
QUANT_BITS_PER_WEIGHT: dict[str, float] = {
    "IQ1_S": 1.56,
    "TQ1_0": 1.69,
    "IQ1_M": 1.75,
    "IQ2_XXS": 2.06,
    "TQ2_0": 2.06,
    "IQ2_XS": 2.31,
    "IQ2_S": 2.5,
    "Q2_K_S": 2.55,
    "Q2_K": 2.63,
    "IQ2_M": 2.7,
    "Q2_K_L": 2.8,
    "Q2_K_XL": 2.9,
    "IQ3_XXS": 3.06,
    "IQ3_XS": 3.3,
    "IQ3_S": 3.44,
    "Q3_K_S": 3.44,
    "IQ3_M": 3.66,
    "Q3_K_M": 3.91,
    "Q3_K_L": 4.1,
    "Q3_K_XL": 4.2,
    "IQ4_XS": 4.25,
    "MXFP4": 4.25,
    "MXFP4_MOE": 4.25,
    "IQ4_NL": 4.5,
    "Q4_0": 4.5,
    "Q4_K_S": 4.58,
    "Q4_K_M": 4.85,
    "Q4_K_L": 4.95,
    "Q4_K_XL": 5.0,
    "Q4_1": 5.0,
    "Q5_0": 5.5,
    "Q5_K_S": 5.54,
    "Q5_K_M": 5.69,
    "Q5_K_L": 5.8,
    "Q5_K_XL": 5.9,
    "Q5_1": 6.0,
    "Q6_K": 6.56,
    "Q6_K_L": 6.7,
    "Q6_K_XL": 6.9,
    "Q8_0": 8.5,
    "Q8_K_XL": 8.75,
    "F16": 16.0,
    "BF16": 16.0,
    "F32": 32.0,
}

#: Below this (UD-Q2_K_XL's rank) quality drops off sharply: nemolaunch never
#: picks such a quant by itself, only when the user names it.
QUALITY_FLOOR_BPW = QUANT_BITS_PER_WEIGHT["Q2_K_XL"]

UNSLOTH_DYNAMIC_PREFIX = "UD-"

# A quant tag: optional Unsloth-dynamic prefix, then a llama.cpp quant type.
_TAG = r"(?:UD-)?(?:IQ\d_[A-Z0-9]+(?:_[A-Z0-9]+)?|Q\d(?:_[A-Z0-9]+){1,3}|TQ\d_0|MXFP4(?:_MOE)?|BF16|F16|F32)"
_TAG_AT_END = re.compile(rf"(?:^|[-._])(?P<tag>{_TAG})$", re.IGNORECASE)
_TAG_ONLY = re.compile(_TAG, re.IGNORECASE)
_SHARD = re.compile(r"-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
# Files that sit beside a model but are not one: vision projectors, the
# speculative-decoding MTP head exported on its own, importance matrices.
_SIDE_FILE = re.compile(r"(?:^|[-_.])(?:mmproj|mtp|imatrix)(?:[-_.]|$)", re.IGNORECASE)
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?")
_QUANT_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ListedFile(Protocol):
    """Anything with a repo path and a size: ListingEntry, or a RemoteFile from the download adapter."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class ListingEntry:
    """One file of a repository listing: its path in the repo and its size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class ModelReference:
    """``owner/repo`` with an optional ``:QUANT``, as llama.cpp's ``-hf`` takes it."""

    repo: str
    quant: str | None = None

    def __str__(self) -> str:
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


@dataclass(frozen=True)
class Quant:
    """One complete quant: every file it needs, and their total size."""

    name: str  # "UD-Q4_K_XL", "Q8_0"
    files: tuple[str, ...]  # repo paths in shard order; files[0] is what llama.cpp is given
    size_bytes: int
    # Nominal bits per weight; estimated from the file size when the tag is not
    # in the table; None when nothing in the repository allows an estimate.
    bits_per_weight: float | None
    bits_estimated: bool = False

    @property
    def dynamic(self) -> bool:
        """An Unsloth dynamic quant (mixed precision chosen per tensor)."""
        return self.name.upper().startswith(UNSLOTH_DYNAMIC_PREFIX)

    @property
    def shard_count(self) -> int:
        return len(self.files)

    @property
    def below_quality_floor(self) -> bool:
        return self.bits_per_weight is not None and self.bits_per_weight < QUALITY_FLOOR_BPW


@dataclass(frozen=True)
class IncompleteQuant:
    """A quant whose shard set is not whole: reported, never offered."""

    name: str
    shard_total: int
    missing: tuple[int, ...]  # 1-based shard numbers
    reason: str


@dataclass(frozen=True)
class Catalog:
    repo: str
    source: CatalogSource
    quants: tuple[Quant, ...]  # lowest quality first
    incomplete: tuple[IncompleteQuant, ...] = ()
    # True for the built-in tables, whose sizes are published figures, not a listing.
    approximate: bool = False

    @property
    def names(self) -> list[str]:
        return [quant.name for quant in self.quants]

    def find(self, name: str) -> Quant:
        """The quant called ``name``: case-insensitive, and ``Q4_K_XL`` finds ``UD-Q4_K_XL``."""
        wanted = [name.upper()]
        if not wanted[0].startswith(UNSLOTH_DYNAMIC_PREFIX):
            wanted.append(UNSLOTH_DYNAMIC_PREFIX + wanted[0])
        for candidate in wanted:
            for quant in self.quants:
                if quant.name.upper() == candidate:
                    return quant
            for broken in self.incomplete:
                if broken.name.upper() == candidate:
                    raise QuantIncomplete(
                        repo=self.repo,
                        quant=broken.name,
                        missing=list(broken.missing),
                        total=broken.shard_total,
                    )
        raise UnknownQuant(repo=self.repo, quant=name, available=self.names)


def parse_model_reference(text: str) -> ModelReference:
    """``owner/repo[:QUANT]`` → its parts, or MalformedModelReference saying what is wrong."""
    stripped = text.strip()
    if not stripped:
        raise MalformedModelReference(reference=text, reason="it is empty")
    if stripped.count(":") > 1:
        raise MalformedModelReference(reference=text, reason="it has more than one ':'")
    repo, colon, quant = stripped.partition(":")
    parts = repo.split("/")
    if len(parts) != 2:
        raise MalformedModelReference(reference=text, reason="the repository must be owner/name")
    for part in parts:
        if not _REPO_PART.fullmatch(part) or "--" in part or ".." in part:
            raise MalformedModelReference(
                reference=text,
                reason=f"{part!r} is not a valid owner or name (letters, digits, '-', '_', '.')",
            )
    if colon and not quant:
        raise MalformedModelReference(reference=text, reason="nothing follows ':'")
    if quant and not _QUANT_PART.fullmatch(quant):
        raise MalformedModelReference(reference=text, reason=f"{quant!r} is not a quant name")
    return ModelReference(repo=repo, quant=quant or None)


def quant_tag(file_name: str) -> str | None:
    """The quant tag at the end of a GGUF file name (shard suffix ignored), upper-cased."""
    stem = _SHARD.sub("", file_name)
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    match = _TAG_AT_END.search(stem)
    return match["tag"].upper() if match else None


def is_side_file(file_name: str) -> bool:
    """mmproj / mtp / imatrix files: GGUF, but not a model to run."""
    return _SIDE_FILE.search(file_name) is not None


def build_catalog(
    repo: str, entries: Iterable[ListedFile], *, source: CatalogSource, approximate: bool = False
) -> Catalog:
    """Group a listing's GGUF files into quants; NoGGUFInRepo when it has none."""
    groups: dict[str, list[ListedFile]] = {}
    for entry in entries:
        folder, _, file_name = entry.path.rpartition("/")
        if not file_name.lower().endswith(".gguf") or is_side_file(file_name):
            continue
        groups.setdefault(_quant_name(folder, file_name), []).append(entry)
    if not groups:
        raise NoGGUFInRepo(repo=repo, source=source)

    complete: list[tuple[str, tuple[str, ...], int]] = []
    incomplete: list[IncompleteQuant] = []
    for name, files in groups.items():
        problem = _shard_problem(name, files)
        if problem is not None:
            incomplete.append(problem)
            continue
        ordered = sorted(files, key=lambda entry: entry.path)
        complete.append((name, tuple(entry.path for entry in ordered), sum(entry.size for entry in ordered)))

    quants = _with_bits_per_weight(complete)
    quants.sort(key=lambda quant: (quant.bits_per_weight or 0.0, quant.size_bytes, quant.name))
    return Catalog(
        repo=repo,
        source=source,
        quants=tuple(quants),
        incomplete=tuple(sorted(incomplete, key=lambda broken: broken.name)),
        approximate=approximate,
    )


def local_quant_name(file_name: str) -> str:
    """What to call a local model's quant: its tag (``Q4_K_M``) when the name has one, else the file's stem."""
    return _quant_name("", file_name)


def _quant_name(folder: str, file_name: str) -> str:
    # Unsloth puts each quant (split or not) in a folder named after it; trust
    # the folder when it is a quant tag, the file name otherwise.
    folder_name = folder.rpartition("/")[2]
    if folder_name and _TAG_ONLY.fullmatch(folder_name):
        return folder_name.upper()
    tag = quant_tag(file_name)
    if tag is not None:
        return tag
    return _SHARD.sub("", file_name).removesuffix(".gguf")


def _shard_problem(name: str, files: list[ListedFile]) -> IncompleteQuant | None:
    totals: set[int] = set()
    indices: list[int] = []
    single_files = 0
    for entry in files:
        match = _SHARD.search(entry.path)
        if match is None:
            single_files += 1
        else:
            totals.add(int(match["total"]))
            indices.append(int(match["index"]))
    if not totals:
        if single_files == 1:
            return None
        return IncompleteQuant(name, single_files, (), f"{single_files} unsplit files claim this quant")
    if single_files or len(totals) > 1:
        return IncompleteQuant(name, max(totals), (), "its files belong to different splits")
    total = totals.pop()
    missing = tuple(index for index in range(1, total + 1) if index not in indices)
    if missing:
        return IncompleteQuant(name, total, missing, f"{len(missing)} of {total} shards missing")
    if len(indices) != total:
        return IncompleteQuant(name, total, (), "a shard is listed twice")
    return None


def _with_bits_per_weight(complete: list[tuple[str, tuple[str, ...], int]]) -> list[Quant]:
    known = {
        name: QUANT_BITS_PER_WEIGHT.get(name.upper().removeprefix(UNSLOTH_DYNAMIC_PREFIX)) for name, _, _ in complete
    }
    anchors = [(size, known[name]) for name, _, size in complete if known[name] is not None and size > 0]
    quants: list[Quant] = []
    for name, files, size in complete:
        bits = known[name]
        if bits is not None or not anchors:
            quants.append(Quant(name, files, size, bits))
            continue
        # Same model, same parameter count: bits per weight scale with file size.
        # Estimate from the known quant nearest in size.
        anchor_size, anchor_bits = min(anchors, key=lambda anchor: abs(anchor[0] - size))
        assert anchor_bits is not None
        quants.append(Quant(name, files, size, round(anchor_bits * size / anchor_size, 2), True))
    return quants


# --- built-in tables ------------------------------------------------------------
# Used when neither the Hub nor the local cache can list a repository. The sizes
# are APPROXIMATE: reconstructed from the published figures (dynamic 1-bit about
# 189 GB, 3-bit about 256 GB of memory, 4-bit about 300 GB, 8-bit about 600 GB),
# with Unsloth's 50 GB shards. A live listing always replaces them.


@dataclass(frozen=True)
class BuiltinQuant:
    name: str
    size_bytes: int
    shards: int


@dataclass(frozen=True)
class BuiltinModel:
    repo: str
    file_stem: str  # the file name before "-QUANT"
    title: str
    quants: tuple[BuiltinQuant, ...]


ULTRA = BuiltinModel(
    repo=ULTRA_REPO,
    file_stem="NVIDIA-Nemotron-3-Ultra-550B-A55B",
    title="Nemotron 3 Ultra 550B-A55B",
    quants=(
        BuiltinQuant("UD-IQ1_S", 189_040_000_000, 4),
        BuiltinQuant("UD-IQ1_M", 199_850_000_000, 4),
        BuiltinQuant("UD-IQ2_XXS", 211_370_000_000, 5),
        BuiltinQuant("UD-IQ2_M", 224_610_000_000, 5),
        BuiltinQuant("UD-Q2_K_XL", 236_480_000_000, 5),
        BuiltinQuant("UD-IQ3_XXS", 252_630_000_000, 6),
        BuiltinQuant("UD-Q3_K_XL", 278_150_000_000, 6),
        BuiltinQuant("UD-Q4_K_XL", 298_750_000_000, 6),
        BuiltinQuant("UD-Q5_K_XL", 380_040_000_000, 8),
        BuiltinQuant("UD-Q6_K_XL", 458_660_000_000, 10),
        BuiltinQuant("Q8_0", 584_370_000_000, 12),
        BuiltinQuant("UD-Q8_K_XL", 601_830_000_000, 13),
        BuiltinQuant("BF16", 1_100_520_000_000, 23),
    ),
)

# The smaller Nemotron 3 models, offered as a way out when the Ultra does not
# fit. Approximate sizes, like the Ultra's.
SUPER = BuiltinModel(
    repo=SUPER_REPO,
    file_stem="NVIDIA-Nemotron-3-Super-120B-A12B",
    title="Nemotron 3 Super 120B-A12B",
    quants=(
        BuiltinQuant("UD-Q2_K_XL", 50_870_000_000, 2),
        BuiltinQuant("UD-Q3_K_XL", 59_940_000_000, 2),
        BuiltinQuant("UD-Q4_K_XL", 73_560_000_000, 2),
        BuiltinQuant("UD-Q5_K_XL", 87_930_000_000, 2),
        BuiltinQuant("UD-Q6_K_XL", 104_270_000_000, 3),
        BuiltinQuant("Q8_0", 128_650_000_000, 3),
        BuiltinQuant("BF16", 241_450_000_000, 5),
    ),
)

NANO = BuiltinModel(
    repo=NANO_REPO,
    file_stem="Nemotron-3-Nano-30B-A3B",
    title="Nemotron 3 Nano 30B-A3B",
    quants=(
        BuiltinQuant("UD-Q2_K_XL", 17_290_000_000, 1),
        BuiltinQuant("UD-Q3_K_XL", 19_680_000_000, 1),
        BuiltinQuant("UD-Q4_K_XL", 22_840_000_000, 1),
        BuiltinQuant("UD-Q5_K_XL", 26_350_000_000, 1),
        BuiltinQuant("UD-Q6_K_XL", 31_020_000_000, 1),
        BuiltinQuant("Q8_0", 33_580_000_000, 1),
        BuiltinQuant("BF16", 63_160_000_000, 2),
    ),
)

BUILTIN_MODELS: tuple[BuiltinModel, ...] = (ULTRA, SUPER, NANO)
#: The ways out, largest first.
SMALLER_NEMOTRON_MODELS: tuple[BuiltinModel, ...] = (SUPER, NANO)


def builtin_listing(model: BuiltinModel) -> list[ListingEntry]:
    """The built-in table as listing entries, laid out as Unsloth publishes:
    split quants in a folder named after the quant, single files at the root."""
    entries: list[ListingEntry] = []
    for quant in model.quants:
        if quant.shards == 1:
            entries.append(ListingEntry(f"{model.file_stem}-{quant.name}.gguf", quant.size_bytes))
            continue
        shard_size = math.ceil(quant.size_bytes / quant.shards)
        for index in range(1, quant.shards + 1):
            size = min(shard_size, quant.size_bytes - shard_size * (index - 1))
            path = f"{quant.name}/{model.file_stem}-{quant.name}-{index:05d}-of-{quant.shards:05d}.gguf"
            entries.append(ListingEntry(path, size))
    return entries


def builtin_model(repo: str) -> BuiltinModel | None:
    for model in BUILTIN_MODELS:
        if model.repo.lower() == repo.lower():
            return model
    return None


def builtin_catalog(repo: str) -> Catalog | None:
    """The built-in table for one of the Nemotron 3 repositories, or None for any other."""
    model = builtin_model(repo)
    if model is None:
        return None
    return build_catalog(model.repo, builtin_listing(model), source="builtin", approximate=True)


def select_catalog(
    repo: str,
    *,
    hub: Sequence[ListedFile] | None,
    cache: Sequence[ListedFile] | None,
) -> Catalog:
    """The catalog from the best listing there is.

    ``hub`` is None when the Hub could not be asked (offline, unreachable);
    ``cache`` is None when the local cache holds nothing of the repository. A
    Hub listing is the truth; the cache only knows what was downloaded, so it is
    used when it holds at least one complete quant; the built-in table comes
    next; a cache holding only partial downloads is the last resort, so the
    user hears which quants are incomplete.
    """
    if hub is not None:
        return build_catalog(repo, hub, source="hub")
    cached: Catalog | None = None
    if cache:
        try:
            cached = build_catalog(repo, cache, source="cache")
        except NoGGUFInRepo:
            cached = None
        if cached is not None and cached.quants:
            return cached
    builtin = builtin_catalog(repo)
    if builtin is not None:
        return builtin
    if cached is not None:
        return cached
    raise NoGGUFInRepo(repo=repo, source="cache")

"""A model larger than memory, run with the experts that fit nowhere paged from disk (``--allow-disk``).

llama.cpp maps the GGUF (mmap): weights left on the CPU side are pages of the file, read from disk
when a token touches them and kept while the page cache has room. With a mixture of experts a token
touches only its routed experts, so a model larger than RAM still answers, at the disk's pace.

What may be paged: only routed experts. The shared tensors (attention, Mamba, the shared expert,
embeddings) are read by every token and must stay in memory, as must everything that is not weights
(KV cache, Mamba state, compute buffers, llama-server itself, each CUDA context). What memory has left
after those holds weights: the GPUs first (llama.cpp's ``--fit``), then the page cache. The rest, the
``disk_bytes``, lives only on disk. The forecast's safety margin is not held back here: when the
estimate is short the page cache shrinks, and tokens come slower rather than memory running out.

How much a token reads from disk (APPROXIMATE): with routing taken as uniform, an expert's slice is
in the page cache with a probability equal to the cached share of the experts outside the GPUs, so
the bytes a token misses are its routed share of ``disk_bytes``, where only about half the page cache
counts (Linux's inactive list, where pages read once wait) and none when a token touches more than
that half holds. Each missed slice costs a read of
the slice or of the device's read-ahead window, whichever is larger: a page fault in a mapped file
reads the whole window around the faulting page (measured here: with an 8 MiB read-ahead, a token
of 0.4 MiB slices read about 20 times what it used). Real routing favours some experts,
which the page cache then keeps: uniform routing errs slow. A prompt's batch of ``batch`` tokens
touches 1 - (1 - routed)^batch of every expert (nearly all of them for 512 tokens), so each batch
reads that share of ``disk_bytes``, in long runs, at the sequential speed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nemolaunch.core.budget import MemoryBudget, Placement
from nemolaunch.core.forecast import CUDA_CONTEXT_BYTES, DEFAULT_UBATCH, ArchitectureFacts, Forecast
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.core.speed import Bandwidth, DevicePart, Sparsity, SpeedForecast, forecast_placed, place_weights

#: Without a measurement (`nemolaunch doctor` makes one): a PCIe 3/4 NVMe SSD's reads, large sequential
#: ones and 1-4 MiB random ones from a few threads (well below its datasheet's deep-queue figures).
ASSUMED_SEQUENTIAL_BYTES_PER_S = 3.0e9
ASSUMED_RANDOM_BYTES_PER_S = 1.5e9
#: Share of the measured read speed that page faults reach (see benchmarks/disk_backed.py).
FAULT_EFFICIENCY = 1.0
#: The share of the page cache that keeps routed experts between tokens (see page_from_disk).
ROUTED_CACHE_SHARE = 0.5
#: Linux's default read-ahead (read_ahead_kb 128), for disks whose setting is not in the facts.
DEFAULT_READ_AHEAD_BYTES = 128 * 1024
#: Reads up to this size go at the random-read speed (measured with 1-4 MiB reads); larger ones stream.
RANDOM_READ_MAX_BYTES = 4 * 1024**2
#: Without the tensors at hand: one expert's slice of one matrix (the Ultra's are ~1-4 MiB).
DEFAULT_SLICE_BYTES = 2 * 1024**2


@dataclass(frozen=True)
class DiskReads:
    """The disk's read speeds past the page cache: measured by `doctor`, or assumed."""

    sequential: Bandwidth
    random: Bandwidth
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES
    faults: Bandwidth | None = None  # what page faults bring in per second, where measured


def disk_reads(facts: HardwareFacts) -> DiskReads:
    disk = facts.disk
    read_ahead = disk.read_ahead_bytes if disk is not None and disk.read_ahead_bytes is not None else None
    read_ahead = DEFAULT_READ_AHEAD_BYTES if read_ahead is None else read_ahead
    if disk is not None and disk.read_bytes_per_s and disk.random_read_bytes_per_s:
        measured = Bandwidth(disk.read_bytes_per_s, "measured"), Bandwidth(disk.random_read_bytes_per_s, "measured")
        faults = Bandwidth(disk.fault_read_bytes_per_s, "measured") if disk.fault_read_bytes_per_s else None
        return DiskReads(*measured, read_ahead, faults)
    return DiskReads(
        Bandwidth(ASSUMED_SEQUENTIAL_BYTES_PER_S, "assumed"),
        Bandwidth(ASSUMED_RANDOM_BYTES_PER_S, "assumed"),
        read_ahead,
    )


def expert_slice_bytes(weights_bytes: int, sparsity: Sparsity, architecture: ArchitectureFacts | None) -> int:
    """One expert's slice of one of its matrices: the experts' bytes over layers × experts × matrices
    (nemotron's latent experts have an up and a down matrix, most others a gate as well)."""
    if architecture is None or architecture.expert_count <= 0:
        return DEFAULT_SLICE_BYTES
    moe_layers = architecture.layer_kinds.count("feed_forward") or architecture.n_layer
    matrices = 2 if architecture.architecture.startswith("nemotron_h") else 3
    return max(round(weights_bytes * sparsity.expert_share / (moe_layers * architecture.expert_count * matrices)), 1)


@dataclass(frozen=True)
class DiskPaging:
    """How a quant that does not fit in memory would run with its experts paged from disk."""

    placement: Placement
    disk_bytes: int  # weights neither the GPUs nor the page cache hold
    memory_weight_bytes: int  # weights that memory holds (GPUs, then the page cache)
    read_per_token: float  # bytes read from disk per generated token (uniform routing, read-ahead included)
    speed: SpeedForecast
    slice_bytes: int = DEFAULT_SLICE_BYTES
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES

    @property
    def read_amplification(self) -> float:
        """Bytes read per byte a token wanted: above 1 where the read-ahead window is larger than a slice."""
        return max(self.read_ahead_bytes / self.slice_bytes, 1.0)

    def to_json(self) -> dict[str, object]:
        return {
            "placement": self.placement,
            "disk_bytes": self.disk_bytes,
            "memory_weight_bytes": self.memory_weight_bytes,
            "disk_read_bytes_per_token": round(self.read_per_token),
            "expert_slice_bytes": self.slice_bytes,
            "read_ahead_bytes": self.read_ahead_bytes,
        }


#: The disk-backed placement for each kind of budget, and how its in-memory part is placed.
_PLACEMENTS: dict[str, tuple[Placement, Placement]] = {
    "metal": ("metal+disk", "metal"),
    "cpu": ("ram+disk", "cpu"),
    "cuda": ("gpu+ram+disk", "gpu+cpu-experts"),
}


def routed_share(sparsity: Sparsity) -> float:
    """The share of the routed experts one token reads: a = (1 - e) + e·r, solved for r."""
    if sparsity.expert_share <= 0:
        return 1.0
    return min(max((sparsity.active_share - (1 - sparsity.expert_share)) / sparsity.expert_share, 0.0), 1.0)


def page_from_disk(
    *,
    weights_bytes: int,
    forecast: Forecast,
    budget: MemoryBudget,
    facts: HardwareFacts,
    sparsity: Sparsity,
    bits_per_weight: float | None,
    layers: int,
    slice_bytes: int = DEFAULT_SLICE_BYTES,
    batch: int = DEFAULT_UBATCH,
) -> DiskPaging | None:
    """The disk-backed run of a quant (see the module docstring); None when memory cannot hold what
    must stay resident, when it fits without the disk, or over RPC (a worker's memory is not paged)."""
    if budget.remote_workers or sparsity.expert_share <= 0:
        return None
    # KV, state, buffers, runtime and each CUDA context stay resident; the proportional and fixed margins
    # are not held back: past a misestimate the page cache gives way (slower tokens, not out of memory).
    resident = forecast.predicted - forecast.weights + budget.cuda_devices * CUDA_CONTEXT_BYTES
    memory_for_weights = budget.total_bytes - resident
    shared = weights_bytes * (1 - sparsity.expert_share)
    disk_bytes = weights_bytes - memory_for_weights
    if disk_bytes <= 0 or memory_for_weights < shared:
        return None
    placement, memory_placement = _PLACEMENTS[budget.kind]
    placed = place_weights(
        facts,
        weights_bytes=weights_bytes,
        placement=memory_placement,
        spill_bytes=forecast.total - budget.gpu_bytes if budget.ram_bytes else 0,
    )
    in_memory = forecast_placed(
        facts, placed, weights_bytes=weights_bytes, sparsity=sparsity, bits_per_weight=bits_per_weight, layers=layers
    )
    routed = routed_share(sparsity)
    reads = disk_reads(facts)
    window = max(slice_bytes, reads.read_ahead_bytes)  # what one missed slice costs
    amplification = window / slice_bytes
    # The experts outside the GPUs: those on disk, and those the page cache holds. A miss reads its whole
    # read-ahead window, so a token reads every window that holds at least one slice it wants: with
    # uniform routing that is 1 - (1 - r)^(window/slice) of them, never more than all (r·window/slice
    # over-counts: 2.95 GB a token of a 0.7 GB model at 8 MiB windows over 78 KB slices). When those windows
    # are more than the cache holds, each layer evicts what the next token starts with (LRU over a cycle
    # larger than itself keeps nothing): every such window comes from disk again.
    experts = weights_bytes * sparsity.expert_share
    gpu_experts = min(max(budget.gpu_bytes - shared, 0), experts) if budget.kind == "cuda" else 0
    cached = max(memory_for_weights - shared - gpu_experts, 0)
    host_experts = disk_bytes + cached
    # Linux keeps a page read once on its inactive list, about half of the file cache (the rest, the
    # active list, holds what was read twice): windows a token reads once each have about half the cache.
    # Measured here (benchmarks/disk_backed.py, 3.86 GB model at 75 %): 2.1 GB read a token, all it
    # touched, where the whole cache would have kept 1.4 GB of it.
    kept = cached * ROUTED_CACHE_SHARE
    windows = 1 - (1 - routed) ** amplification  # the share of windows a token touches
    touched = windows * host_experts
    per_token = touched if touched > kept else windows * (host_experts - kept)
    if reads.faults is not None:
        rate = reads.faults
    else:
        rate = reads.random if window <= RANDOM_READ_MAX_BYTES else reads.sequential
    disk_part = DevicePart("disk", per_token, rate, FAULT_EFFICIENCY)
    generation = None
    if in_memory.generation_tps:
        generation = 1 / (1 / in_memory.generation_tps + disk_part.seconds)
    prompt = None
    if in_memory.prompt_tps and rate.bytes_per_s:
        batch_touched = 1 - (1 - routed) ** batch
        # A batch reads its experts layer after layer: when that is more than the cache holds, each batch
        # evicts what the next one starts with, and every expert it touches comes from disk again.
        streamed = host_experts if batch_touched * host_experts > kept else host_experts - kept
        batch_seconds = batch_touched * streamed / rate.bytes_per_s
        prompt = 1 / (1 / in_memory.prompt_tps + batch_seconds / batch)
    speed = replace(in_memory, generation_tps=generation, prompt_tps=prompt, parts=(*in_memory.parts, disk_part))
    return DiskPaging(
        placement, round(disk_bytes), round(memory_for_weights), per_token, speed, slice_bytes, reads.read_ahead_bytes
    )

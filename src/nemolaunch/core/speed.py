"""How fast a quant will answer: generation bound by memory bandwidth, prompts bound by compute.

Generation: each token reads the *active* weights once (for a mixture of experts, the shared
tensors and the chosen experts: about 55B of the Ultra's 550B parameters), from wherever they
live. So seconds per token = Σ over devices of (active bytes there ÷ that device's bandwidth ×
efficiency), plus, over RPC, a round trip per worker. Prompt processing reads the weights once per
batch and is bound by arithmetic instead: 2 FLOPs per active parameter per token.

Everything here is an estimate, and says so: bandwidths come from NVML (bus width × memory clock),
a table of known chips, a measurement of this machine's RAM (``doctor``), or a guess from the CPU;
the efficiencies are the share of peak that llama.cpp's kernels reach (validated against measured
tokens/s by benchmarks/speed_vs_forecast.py, never fitted to one run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from nemolaunch.core.hardware import GpuFacts, HardwareFacts

GB = 1e9
TB = 1e12

#: Share of peak bandwidth llama.cpp's token-generation kernels reach. A GPU's peak is a datasheet
#: figure; RAM's is what `doctor` measured reading memory with every core, already an achieved rate.
GPU_EFFICIENCY = 0.50
MEASURED_RAM_EFFICIENCY = 0.85
#: What every layer costs per token besides reading its weights: ggml's thread barriers and op
#: dispatch on the CPU (19-26 µs a layer, measured on the tiny model and the smallest scaled model,
#: where reading is negligible); kernel launches and syncs on a GPU (not measured here: no GPU).
CPU_LAYER_OVERHEAD_S = 20e-6
GPU_LAYER_OVERHEAD_S = 50e-6
#: Share of peak arithmetic a prompt's quantized matrix multiplications reach.
GPU_COMPUTE_EFFICIENCY = 0.35
CPU_COMPUTE_EFFICIENCY = 0.50
#: What a CPU core multiplies per cycle in token generation's matrix-vector products, over quantized
#: weights (unpack, scale, integer dot): a low-bit quant can be compute-bound before it is memory-bound.
#: Measured here (benchmarks/speed_vs_forecast.py): Q4_0 ran at 67 GFLOP/s on 2 cores at ~3 GHz, slower
#: than its smaller size alone would allow, while Q8_0, F16 and F32 stayed bound by memory. ggml's
#: quantized dot products are AVX2-width whatever wider units a CPU has, so no lane count enters.
CPU_DOT_FLOPS_PER_CYCLE = 11.0
#: What one RPC worker adds to every token: the head sends each worker its part of the graph and
#: waits for the result. Measured on loopback by benchmarks/rpc_cluster.py (~1.2 ms); a LAN adds
#: its round-trip time on top.
RPC_TOKEN_OVERHEAD_S = 1.5e-3

#: Peak memory bandwidth (bytes/s) and dense FP16 tensor throughput (FLOP/s) by GPU name, most
#: specific first: datasheet figures, for when NVML cannot say.
GPU_TABLE: tuple[tuple[str, float, float], ...] = (
    ("GB200", 8.0 * TB, 2250e12),
    ("B200", 8.0 * TB, 2250e12),
    ("B100", 8.0 * TB, 1750e12),
    ("H200", 4.8 * TB, 989e12),
    ("H100 NVL", 3.9 * TB, 835e12),
    ("H100 PCIe", 2.0 * TB, 756e12),
    ("H100", 3.35 * TB, 989e12),
    ("GH200", 4.0 * TB, 989e12),
    ("A100-SXM4-80GB", 2.04 * TB, 312e12),
    ("A100 80GB PCIe", 1.94 * TB, 312e12),
    ("A100", 1.555 * TB, 312e12),
    ("L40S", 0.864 * TB, 362e12),
    ("L40", 0.864 * TB, 181e12),
    ("L4", 0.3 * TB, 121e12),
    ("A6000", 0.768 * TB, 155e12),
    ("A10", 0.6 * TB, 125e12),
    ("RTX 5090", 1.792 * TB, 210e12),
    ("RTX 5080", 0.96 * TB, 113e12),
    ("RTX 4090", 1.008 * TB, 165e12),
    ("RTX 4080", 0.717 * TB, 97e12),
    ("RTX 3090", 0.936 * TB, 71e12),
    ("RTX 3080", 0.76 * TB, 60e12),
    ("GB10", 0.273 * TB, 125e12),  # DGX Spark: LPDDR5X shared with the CPU
)

#: Apple silicon: unified memory bandwidth and GPU FP16 throughput, by chip (sysctl's brand string).
APPLE_TABLE: tuple[tuple[str, float, float], ...] = (
    ("M4 Max", 546 * GB, 34e12),
    ("M4 Pro", 273 * GB, 17e12),
    ("M4", 120 * GB, 8.5e12),
    ("M3 Ultra", 819 * GB, 57e12),
    ("M3 Max", 400 * GB, 28e12),
    ("M3 Pro", 150 * GB, 14e12),
    ("M3", 100 * GB, 7e12),
    ("M2 Ultra", 800 * GB, 54e12),
    ("M2 Max", 400 * GB, 27e12),
    ("M2 Pro", 200 * GB, 13.6e12),
    ("M2", 100 * GB, 7e12),
    ("M1 Ultra", 800 * GB, 42e12),
    ("M1 Max", 400 * GB, 21e12),
    ("M1 Pro", 200 * GB, 10.6e12),
    ("M1", 68 * GB, 5.2e12),
)

#: Without a measurement: one core's share of a loaded memory system (a 96-core 12-channel DDR5
#: server reads ~460 GB/s, ~4.8 GB/s a core; a 16-core dual-channel desktop ~80 GB/s, ~5 a core), and
#: what llama.cpp reaches on the biggest boxes, which span NUMA nodes it does not place memory for.
RAM_BYTES_PER_S_PER_CORE = 5 * GB
RAM_BYTES_PER_S_MAX = 400 * GB
CPU_CLOCK_HZ = 3.0e9

Source = Literal["nvml", "table", "measured", "estimated", "assumed", "unknown"]


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: float | None
    source: Source


def gpu_bandwidth(gpu: GpuFacts, cpu_model: str | None = None) -> Bandwidth:
    """A GPU's memory bandwidth: what NVML said, else the table by name (Apple: by chip)."""
    if gpu.memory_bandwidth_bytes_per_s:
        return Bandwidth(gpu.memory_bandwidth_bytes_per_s, "nvml")
    row = _lookup(gpu, cpu_model)
    return Bandwidth(row[1], "table") if row else Bandwidth(None, "unknown")


def gpu_flops(gpu: GpuFacts, cpu_model: str | None = None) -> float | None:
    row = _lookup(gpu, cpu_model)
    return row[2] if row else None


def _lookup(gpu: GpuFacts, cpu_model: str | None) -> tuple[str, float, float] | None:
    table = APPLE_TABLE if gpu.backend == "metal" else GPU_TABLE
    # A Metal device is named after the chip ("Apple M3 Ultra"); so is the CPU, as a fallback.
    for haystack in (gpu.name, cpu_model or "") if gpu.backend == "metal" else (gpu.name,):
        for row in table:
            if re.search(rf"\b{re.escape(row[0])}\b", haystack):
                return row
    return None


def ram_bandwidth(facts: HardwareFacts) -> Bandwidth:
    """System RAM's read bandwidth: measured by `doctor`, else a guess from the core count."""
    if facts.memory.bandwidth_bytes_per_s:
        return Bandwidth(facts.memory.bandwidth_bytes_per_s, "measured")
    cores = facts.cpu.physical_cores or facts.cpu.logical_cores or 4
    return Bandwidth(min(cores * RAM_BYTES_PER_S_PER_CORE, RAM_BYTES_PER_S_MAX), "estimated")


def cpu_flops(facts: HardwareFacts) -> float:
    cores = facts.cpu.physical_cores or facts.cpu.logical_cores or 4
    flags = set(facts.cpu.flags)
    # FP32 FLOPs per cycle per core: two FMA units of 16 (AVX-512), 8 (AVX2) or 4 (NEON/other) lanes.
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    return cores * CPU_CLOCK_HZ * lanes * 2 * 2


def cpu_dot_flops(facts: HardwareFacts) -> float:
    """What token generation's quantized matrix-vector products reach on every core (see CPU_DOT_FLOPS_PER_CYCLE)."""
    cores = facts.cpu.physical_cores or facts.cpu.logical_cores or 4
    return cores * CPU_CLOCK_HZ * CPU_DOT_FLOPS_PER_CYCLE


_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)B-A(\d+(?:\.\d+)?)B", re.IGNORECASE)


def active_share_from_name(repo: str) -> float | None:
    """The active share of a mixture of experts named like ``…-550B-A55B``: 55 / 550."""
    match = _SIZE_IN_NAME.search(repo)
    if match is None:
        return None
    total, active = float(match[1]), float(match[2])
    return active / total if 0 < active <= total else None


#: When neither the name nor the tensors say: routed experts are about this share of an MoE's weights.
EXPERT_SHARE_GUESS = 0.9


def active_share_from_experts(expert_count: int, expert_used_count: int) -> float:
    if expert_count <= 0 or expert_used_count <= 0:
        return 1.0
    return (1 - EXPERT_SHARE_GUESS) + EXPERT_SHARE_GUESS * expert_used_count / expert_count


@dataclass(frozen=True)
class FastPart:
    """A device outside this machine's RAM that holds weights: a GPU, the Apple GPU, an RPC worker."""

    name: str
    held_bytes: int
    bandwidth: Bandwidth
    flops: float | None
    kind: Literal["gpu", "worker"] = "gpu"
    efficiency: float = GPU_EFFICIENCY  # share of its bandwidth it reaches (RAM that was measured: less)


@dataclass(frozen=True)
class DevicePart:
    """One place the active weights are read from for each token."""

    device: str
    bytes_per_token: float
    bandwidth: Bandwidth
    efficiency: float
    flops: float | None = None
    compute_efficiency: float = GPU_COMPUTE_EFFICIENCY
    compute_s: float = 0.0  # a token's multiplications, where they take longer than its reads (CPU)

    @property
    def seconds(self) -> float:
        if not self.bandwidth.bytes_per_s or self.bytes_per_token <= 0:
            return self.compute_s
        return max(self.bytes_per_token / (self.bandwidth.bytes_per_s * self.efficiency), self.compute_s)

    def to_json(self) -> dict[str, object]:
        return {
            "device": self.device,
            "bytes_per_token": round(self.bytes_per_token),
            "bandwidth_bytes_per_s": self.bandwidth.bytes_per_s,
            "bandwidth_source": self.bandwidth.source,
            "efficiency": self.efficiency,
            "compute_s": round(self.compute_s, 6),
        }


@dataclass(frozen=True)
class SpeedForecast:
    generation_tps: float | None  # None when a device's bandwidth is unknown
    prompt_tps: float | None
    active_bytes_per_token: float
    parts: tuple[DevicePart, ...]
    network_seconds: float = 0.0
    overhead_seconds: float = 0.0  # per token, the layers' fixed costs

    def to_json(self) -> dict[str, object]:
        return {
            "generation_tokens_per_s": _round(self.generation_tps),
            "prompt_tokens_per_s": _round(self.prompt_tps),
            "active_bytes_per_token": round(self.active_bytes_per_token),
            "network_seconds_per_token": self.network_seconds,
            "overhead_seconds_per_token": self.overhead_seconds,
            "parts": [part.to_json() for part in self.parts],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def forecast_speed(
    *,
    weights_bytes: int,
    active_share: float,
    expert_share: float,
    bits_per_weight: float | None,
    fast_parts: tuple[FastPart, ...],
    ram_bytes: int,
    ram: Bandwidth,
    ram_flops: float | None,
    rpc_workers: int = 0,
    ram_dot_flops: float | None = None,
    layers: int = 0,
) -> SpeedForecast:
    """Tokens/s for a model of ``weights_bytes`` whose weights sit as given.

    ``fast_parts`` is one per fast device (a GPU, the Apple GPU,
    an RPC worker); ``ram_bytes`` is what stays in this machine's RAM. Devices holding whole layers
    read ``active_share`` of what they hold per token. Beside GPUs, RAM holds routed experts first
    (llama.cpp's --fit keeps the shared tensors on the GPUs): of those only the routed share is
    read. ``expert_share`` is the routed experts' part of the weights.
    """
    active = weights_bytes * active_share
    experts = weights_bytes * expert_share
    shared = weights_bytes - experts
    routed = min(max((active - shared) / experts, 0.0), 1.0) if experts > 0 else active_share
    ram_bytes = min(max(ram_bytes, 0), weights_bytes)
    if fast_parts and experts > 0:
        experts_in_ram = min(ram_bytes, experts)
        ram_read = experts_in_ram * routed + (ram_bytes - experts_in_ram)
    else:
        ram_read = ram_bytes * active_share
    fast_read = max(active - ram_read, 0.0)
    fast_held = sum(part.held_bytes for part in fast_parts)
    parts = [
        DevicePart(part.name, fast_read * part.held_bytes / fast_held, part.bandwidth, part.efficiency, part.flops)
        for part in fast_parts
        if fast_held > 0
    ]
    if ram_bytes > 0:
        efficiency = MEASURED_RAM_EFFICIENCY if ram.source == "measured" else 1.0
        # 2 FLOPs per weight read, at what the CPU's quantized dot products reach.
        dot_s = 2 * ram_read * 8 / bits_per_weight / ram_dot_flops if bits_per_weight and ram_dot_flops else 0.0
        parts.append(DevicePart("RAM", ram_read, ram, efficiency, ram_flops, CPU_COMPUTE_EFFICIENCY, dot_s))
    network = rpc_workers * RPC_TOKEN_OVERHEAD_S
    on_gpus = sum(part.held_bytes for part in fast_parts if part.kind == "gpu") / weights_bytes if weights_bytes else 0
    overhead = layers * (on_gpus * GPU_LAYER_OVERHEAD_S + (1 - on_gpus) * CPU_LAYER_OVERHEAD_S)
    if any(part.bandwidth.bytes_per_s is None and part.bytes_per_token > 0 for part in parts):
        generation = None
    else:
        seconds = sum(part.seconds for part in parts) + network + overhead
        generation = 1 / seconds if seconds > 0 else None
    prompt = None
    if bits_per_weight and active > 0 and all(part.flops for part in parts if part.bytes_per_token > 0):
        # Each device multiplies the parameters it reads: 2 FLOPs per parameter per token.
        seconds = sum(
            2 * part.bytes_per_token * 8 / bits_per_weight / (part.flops * part.compute_efficiency)
            for part in parts
            if part.flops
        )
        prompt = 1 / seconds if seconds > 0 else None
    return SpeedForecast(generation, prompt, active, tuple(parts), network, overhead)


@dataclass(frozen=True)
class Sparsity:
    """How much of a model each token reads: the active share, and the routed experts' share."""

    active_share: float
    expert_share: float
    source: Literal["tensors", "name", "experts", "dense"]


def model_sparsity(repo: str, expert_count: int = 0, expert_used_count: int = 0) -> Sparsity:
    """From the name (``550B-A55B``) when it says, else from the expert counts, else dense.

    The experts' share follows from the active share and the routing: a = (1 - e) + e·used/count.
    """
    routed = expert_used_count / expert_count if expert_count > 0 and expert_used_count > 0 else None
    named = active_share_from_name(repo)
    if named is not None:
        expert = (1 - named) / (1 - routed) if routed is not None and routed < 1 else 1 - named
        return Sparsity(named, min(max(expert, 0.0), 1.0), "name")
    if routed is not None:
        return Sparsity(active_share_from_experts(expert_count, expert_used_count), EXPERT_SHARE_GUESS, "experts")
    return Sparsity(1.0, 0.0, "dense")


@dataclass(frozen=True)
class Placed:
    """Where a quant's weights sit, as the plan places them, for the speed forecast."""

    gpus: tuple[FastPart, ...] = ()  # this machine's GPUs (or the Apple GPU)
    workers: tuple[FastPart, ...] = ()  # RPC workers
    ram_bytes: int = 0  # this machine's RAM


def place_weights(
    facts: HardwareFacts,
    *,
    weights_bytes: int,
    placement: str,
    spill_bytes: int,
    head_weights_bytes: int | None = None,
    workers: tuple[FastPart, ...] = (),
) -> Placed:
    """The weights' places for a placement: GPUs in proportion to their free memory, what spills
    (``spill_bytes``) in RAM; over RPC, each worker's share and the rest on this machine."""
    gpus = [gpu for gpu in facts.gpus if placement == "metal" or (gpu.backend == "cuda" and not gpu.unified)]
    if placement == "cpu" or (placement != "metal" and not gpus and placement != "cluster"):
        return Placed(ram_bytes=weights_bytes)
    here = weights_bytes if head_weights_bytes is None else head_weights_bytes
    if placement == "metal":
        gpu = gpus[0]
        chip = facts.cpu.model
        return Placed(gpus=(FastPart(gpu.name, here, gpu_bandwidth(gpu, chip), gpu_flops(gpu, chip)),))
    gpu_free = sum(gpu.free_bytes for gpu in gpus)
    ram = min(max(spill_bytes, 0), here) if gpus else here
    on_gpus = here - ram
    parts = tuple(
        FastPart(
            f"{gpu.name} #{gpu.index}",
            round(on_gpus * gpu.free_bytes / gpu_free) if gpu_free else 0,
            gpu_bandwidth(gpu),
            gpu_flops(gpu),
        )
        for gpu in gpus
    )
    return Placed(gpus=parts, workers=workers, ram_bytes=ram)


def forecast_placed(
    facts: HardwareFacts,
    placed: Placed,
    *,
    weights_bytes: int,
    sparsity: Sparsity,
    bits_per_weight: float | None,
    layers: int = 0,
) -> SpeedForecast:
    return forecast_speed(
        weights_bytes=weights_bytes,
        active_share=sparsity.active_share,
        expert_share=sparsity.expert_share,
        bits_per_weight=bits_per_weight,
        fast_parts=placed.workers + placed.gpus,
        ram_bytes=placed.ram_bytes,
        ram=ram_bandwidth(facts),
        ram_flops=cpu_flops(facts),
        ram_dot_flops=cpu_dot_flops(facts),
        rpc_workers=sum(1 for part in placed.workers if part.held_bytes > 0),
        layers=layers,
    )

"""One quant held against a machine: its memory forecast, whether it fits, where it goes, how fast it runs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from nemolaunch.core.budget import DISK_PLACEMENTS, MemoryBudget, Placement
from nemolaunch.core.catalog import (
    QUALITY_FLOOR_BPW,
    Quant,
)
from nemolaunch.core.cluster import HostShare, Worker, spread
from nemolaunch.core.disk_paging import DiskPaging, expert_slice_bytes, page_from_disk
from nemolaunch.core.forecast import (
    DEFAULT_CTX_SIZE,
    RPC_SERVER_RUNTIME_BYTES,
    ArchitectureFacts,
    Forecast,
    forecast_memory,
)
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.core.speed import (
    GPU_EFFICIENCY,
    MEASURED_RAM_EFFICIENCY,
    Bandwidth,
    FastPart,
    Sparsity,
    SpeedForecast,
    cpu_flops,
    forecast_placed,
    place_weights,
    ram_bandwidth,
)

Preference = Literal["quality", "speed"]

#: Past 8 bits a quant is as good as lossless, so more bits stop counting as
#: quality: among quants at or above this, one that stays entirely in fast
#: memory beats a bigger one that must spill experts to RAM.
QUALITY_CEILING_BPW = 8.5


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for; the model itself is the catalog's repository."""

    quant: str | None = None  # forces this quant (matched case-insensitively)
    ctx_size: int = DEFAULT_CTX_SIZE
    force: bool = False  # launch even when the forecast does not fit
    parallel: int = 1  # llama-server slots: each keeps its own Mamba state
    cache_type: str = "f16"
    prefer: Preference = "quality"
    min_speed: float | None = None  # generation tokens/s the choice must reach
    sparsity: Sparsity | None = None  # read from a local GGUF's tensors; else from the name or experts
    max_context: bool = False  # --ctx-size max: the longest context that fits beside the chosen quant
    allow_disk: bool = False  # --allow-disk: a quant larger than memory may run with experts paged from disk


@dataclass(frozen=True)
class QuantAssessment:
    """One quant measured against this machine."""

    quant: Quant
    forecast: Forecast
    fits: bool
    placement: Placement
    speed: SpeedForecast | None = None
    max_ctx: int | None = None  # the longest context that fits beside it; None: not even the shortest
    # Too large for memory, but it would run with experts paged from disk: how (whether allowed or not).
    disk: DiskPaging | None = None

    @property
    def paged(self) -> bool:
        """Placed with experts paged from disk (only with --allow-disk)."""
        return self.placement in DISK_PLACEMENTS

    @property
    def tokens_per_s(self) -> float:
        """Forecast generation speed; 0 when unknown (it then never wins on speed)."""
        return (self.speed.generation_tps or 0.0) if self.speed else 0.0


def assess(
    quant: Quant,
    budget: MemoryBudget,
    architecture: ArchitectureFacts | None,
    request: PlanRequest,
    facts: HardwareFacts | None = None,
    sparsity: Sparsity | None = None,
) -> QuantAssessment:
    forecast = quant_forecast(quant, budget, architecture, request, request.ctx_size)
    total = forecast.total
    placement = budget.placement_for(total)
    layers = architecture.n_layer if architecture else 0
    speed = _speed(quant, forecast, placement, budget, facts, sparsity, layers) if facts and sparsity else None
    longest = max_context(quant, budget, architecture, request)
    fits = total <= budget.total_bytes
    disk = None
    if not fits and facts is not None and sparsity is not None:
        disk = page_from_disk(
            weights_bytes=quant.size_bytes, forecast=forecast, budget=budget, facts=facts, sparsity=sparsity,
            bits_per_weight=quant.bits_per_weight, layers=layers,
            slice_bytes=expert_slice_bytes(quant.size_bytes, sparsity, architecture),
        )  # fmt: skip
    if disk is not None and request.allow_disk:
        return QuantAssessment(quant, forecast, True, disk.placement, disk.speed, longest, disk)
    return QuantAssessment(quant, forecast, fits, placement, speed, longest, disk)


def quant_forecast(
    quant: Quant, budget: MemoryBudget, architecture: ArchitectureFacts | None, request: PlanRequest, ctx_size: int
) -> Forecast:
    """The memory ``quant`` needs at ``ctx_size`` on this budget's devices (GPUs, RPC workers, the CPU)."""
    return forecast_memory(
        quant.size_bytes,
        architecture,
        ctx_size=ctx_size,
        parallel=request.parallel,
        gpu_devices=budget.gpu_devices,
        cuda_devices=budget.cuda_devices,
        cache_type=request.cache_type,
        rpc_devices=budget.rpc_devices,
        rpc_workers=len(budget.workers),
    )


#: llama.cpp rounds a context up to a multiple of 256 (its KV cache pads to it): plan in those steps.
CTX_STEP = 256


def max_context(
    quant: Quant, budget: MemoryBudget, architecture: ArchitectureFacts | None, request: PlanRequest
) -> int | None:
    """The longest context (a multiple of 256, up to the model's training context) whose forecast fits.

    None when even the shortest does not, or when the architecture is unknown (no KV cache to count).
    """
    if architecture is None:
        return None

    def fits(ctx_size: int) -> bool:
        return quant_forecast(quant, budget, architecture, request, ctx_size).total <= budget.total_bytes

    low, high = 0, architecture.n_ctx_train // CTX_STEP  # in steps; the forecast grows with the context
    if high == 0 or not fits(CTX_STEP):
        return None
    if fits(high * CTX_STEP):
        return architecture.n_ctx_train if fits(architecture.n_ctx_train) else high * CTX_STEP
    low = 1
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle * CTX_STEP):
            low = middle
        else:
            high = middle
    return low * CTX_STEP


def _speed(
    quant: Quant,
    forecast: Forecast,
    placement: Placement,
    budget: MemoryBudget,
    facts: HardwareFacts,
    sparsity: Sparsity,
    layers: int,
) -> SpeedForecast:
    """The generation and prompt speed of ``quant`` placed as the plan places it."""
    head_weights = None
    workers: tuple[FastPart, ...] = ()
    spill = forecast.total - budget.gpu_bytes if budget.kind == "cuda" and budget.ram_bytes else 0
    if placement == "cluster":
        hosts = hosts_of(forecast, budget, facts)
        head_weights = hosts[0].weights_bytes
        spill = hosts[0].planned_bytes - budget.gpu_bytes if budget.ram_bytes else 0
        shares = {host.host: host.weights_bytes for host in hosts[1:]}
        workers = tuple(
            _worker_part(worker, shares.get(str(worker.endpoint), 0), facts) for worker in budget.remote_workers
        )
    placed = place_weights(
        facts,
        weights_bytes=quant.size_bytes,
        placement=placement,
        spill_bytes=spill,
        head_weights_bytes=head_weights,
        workers=workers,
    )
    return forecast_placed(
        facts,
        placed,
        weights_bytes=quant.size_bytes,
        sparsity=sparsity,
        bits_per_weight=quant.bits_per_weight,
        layers=layers,
    )


def _worker_part(worker: Worker, held_bytes: int, facts: HardwareFacts) -> FastPart:
    """A worker as the speed forecast sees it: what it holds, how fast it reads, at what efficiency."""
    kinds = {device.kind for device in worker.devices}
    known = [device.bandwidth_bytes_per_s for device in worker.devices if device.bandwidth_bytes_per_s]
    flops = worker.devices[0].flops or cpu_flops(facts)
    if known and len(known) == len(worker.devices):
        # Its devices work one after another on their layers: the slowest sets the pace.
        efficiency = GPU_EFFICIENCY if kinds == {"gpu"} else 1.0
        return FastPart(str(worker.endpoint), held_bytes, Bandwidth(min(known), "table"), flops, "worker", efficiency)
    # A live worker does not say what it lends: taken as fast as this machine's RAM.
    here = ram_bandwidth(facts)
    efficiency = MEASURED_RAM_EFFICIENCY if here.source == "measured" else 1.0
    return FastPart(
        str(worker.endpoint), held_bytes, Bandwidth(here.bytes_per_s, "estimated"), flops, "worker", efficiency
    )


def rank(item: QuantAssessment) -> tuple[float, bool, float]:
    bits = item.quant.bits_per_weight or 0.0
    all_in_fast_memory = item.placement != "gpu+cpu-experts"
    # Past the ceiling more bits are not better answers, only more bytes: when they must spill
    # experts to RAM anyway, the smaller file (less spilled, faster tokens) wins among those.
    spills = not all_in_fast_memory and bits >= QUALITY_CEILING_BPW
    tiebreak = -float(item.quant.size_bytes) if spills else bits
    return (min(bits, QUALITY_CEILING_BPW), all_in_fast_memory, tiebreak)


def best(items: Iterable[QuantAssessment]) -> QuantAssessment | None:
    candidates = list(items)
    return max(candidates, key=rank) if candidates else None


def hosts_of(forecast: Forecast, budget: MemoryBudget, facts: HardwareFacts) -> tuple[HostShare, ...]:
    """Each machine's part of ``forecast``, as llama.cpp would place it over the cluster."""
    remote = budget.remote_workers
    remote_devices = sum(len(worker.devices) for worker in remote)
    compute_devices = budget.gpu_devices + budget.rpc_devices + 1
    per_device = forecast.compute // compute_devices
    layer_bytes = forecast.weights + forecast.kv + forecast.recurrent
    remote_overhead = remote_devices * per_device + len(remote) * RPC_SERVER_RUNTIME_BYTES
    head_devices = (*(f"{gpu.backend.upper()}{gpu.index} {gpu.name}" for gpu in facts.gpus), "CPU")
    return spread(
        layer_bytes=layer_bytes,
        weights_bytes=forecast.weights,
        head_fixed_bytes=forecast.total - layer_bytes - remote_overhead,
        head_gpu_bytes=budget.gpu_bytes if budget.ram_bytes else 0,
        head_ram_bytes=budget.ram_bytes if budget.ram_bytes else budget.gpu_bytes,
        head_devices=head_devices,
        workers=remote,
        per_device_bytes=per_device,
    )


def gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


def floor_name() -> str:
    return f"UD-Q2_K_XL ({QUALITY_FLOOR_BPW} bits per weight)"

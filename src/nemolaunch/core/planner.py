"""The plan: which quant to run on this machine, where it goes, and why.

``plan_launch`` is a pure function of hardware facts, a quant catalog, the
model's architecture facts and the request. It picks the highest-quality quant
whose forecast fits the memory budget and names the placement. It never
decides how layers are split: llama.cpp's ``--fit`` (on by default) fills the
GPUs and keeps the MoE experts that do not fit in RAM, and the plan never asks
for ``--n-cpu-moe``, which switches ``--fit`` off (llama.cpp issue 27872).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from nemolaunch.core.catalog import (
    QUALITY_FLOOR_BPW,
    SMALLER_NEMOTRON_MODELS,
    BuiltinModel,
    Catalog,
    CatalogSource,
    IncompleteQuant,
    Quant,
    builtin_catalog,
)
from nemolaunch.core.cluster import (
    HostShare,
    RpcEndpoint,
    Worker,
    machines_needed,
    spread,
    worker_like,
)
from nemolaunch.core.forecast import (
    DEFAULT_CTX_SIZE,
    RPC_SERVER_RUNTIME_BYTES,
    ArchitectureFacts,
    Forecast,
    GiB,
    forecast_memory,
    validate_ctx_size,
)
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.core.launch import DEFAULT_RPC_PORT
from nemolaunch.core.speed import (
    GPU_EFFICIENCY,
    RPC_TOKEN_OVERHEAD_S,
    Bandwidth,
    Sparsity,
    SpeedForecast,
    cpu_flops,
    forecast_placed,
    gpu_bandwidth,
    model_sparsity,
    place_weights,
    ram_bandwidth,
)
from nemolaunch.errors import BadOption, NoCompleteQuant

Placement = Literal["gpu", "gpu+cpu-experts", "cpu", "metal", "cluster"]
Preference = Literal["quality", "speed"]
BudgetKind = Literal["cuda", "metal", "cpu"]

#: Past 8 bits a quant is as good as lossless, so more bits stop counting as
#: quality: among quants at or above this, one that stays entirely in fast
#: memory beats a bigger one that must spill experts to RAM.
QUALITY_CEILING_BPW = 8.5
#: What to leave macOS when suggesting a higher iogpu.wired_limit_mb.
MACOS_RESERVE_BYTES = 16 * GiB


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


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a model may use on this machine."""

    kind: BudgetKind
    gpu_bytes: int  # free memory of discrete CUDA GPUs, or the Metal / unified GPU budget
    ram_bytes: int  # RAM available on top of it; 0 where GPU memory is the RAM
    gpu_devices: int
    cuda_devices: int
    workers: tuple[Worker, ...] = ()  # llama.cpp RPC workers; loopback ones add no memory

    @property
    def remote_workers(self) -> tuple[Worker, ...]:
        return tuple(worker for worker in self.workers if not worker.on_this_machine)

    @property
    def worker_bytes(self) -> int:
        return sum(worker.usable_bytes for worker in self.remote_workers)

    @property
    def head_bytes(self) -> int:
        return self.gpu_bytes + self.ram_bytes

    @property
    def total_bytes(self) -> int:
        return self.head_bytes + self.worker_bytes

    @property
    def rpc_devices(self) -> int:
        return sum(len(worker.devices) for worker in self.workers)

    def placement_for(self, forecast_bytes: int) -> Placement:
        if self.remote_workers:
            return "cluster"
        if self.kind == "metal":
            return "metal"
        if self.kind == "cpu":
            return "cpu"
        return "gpu" if forecast_bytes <= self.gpu_bytes else "gpu+cpu-experts"


def memory_budget(facts: HardwareFacts, workers: tuple[Worker, ...] = ()) -> MemoryBudget:
    """GPU free memory + RAM available on CUDA machines; the Metal budget on Apple; RAM otherwise;
    plus what each RPC worker on another machine lets llama.cpp fill.

    Unified memory (Apple silicon, CUDA boards whose GPU uses the system RAM) is
    counted once, as GPU memory, never again as RAM.
    """
    head = _head_budget(facts)
    return MemoryBudget(head.kind, head.gpu_bytes, head.ram_bytes, head.gpu_devices, head.cuda_devices, workers)


def _head_budget(facts: HardwareFacts) -> MemoryBudget:
    metal = [gpu for gpu in facts.gpus if gpu.backend == "metal"]
    if metal:
        return MemoryBudget("metal", max(gpu.free_bytes for gpu in metal), 0, 1, 0)
    cuda = [gpu for gpu in facts.gpus if gpu.backend == "cuda"]
    if not cuda:
        return MemoryBudget("cpu", 0, facts.memory.available_bytes, 0, 0)
    discrete = [gpu for gpu in cuda if not gpu.unified]
    if not discrete:
        # Every GPU shares the one pool of system memory.
        pool = min(max(gpu.free_bytes for gpu in cuda), facts.memory.available_bytes)
        return MemoryBudget("cuda", pool, 0, len(cuda), len(cuda))
    return MemoryBudget(
        "cuda",
        sum(gpu.free_bytes for gpu in discrete),
        facts.memory.available_bytes,
        len(cuda),
        len(cuda),
    )


@dataclass(frozen=True)
class QuantAssessment:
    """One quant measured against this machine."""

    quant: Quant
    forecast: Forecast
    fits: bool
    placement: Placement
    speed: SpeedForecast | None = None

    @property
    def tokens_per_s(self) -> float:
        """Forecast generation speed; 0 when unknown (it then never wins on speed)."""
        return (self.speed.generation_tps or 0.0) if self.speed else 0.0


@dataclass(frozen=True)
class WayOut:
    """One way to get a model running when the plan does not fit."""

    kind: Literal["smaller_quant", "below_floor_quant", "smallest_quant", "metal_limit", "smaller_model", "rpc"]
    text: str
    repo: str | None = None
    quant: str | None = None
    needs_bytes: int | None = None
    machines: int | None = None  # for "rpc": machines like this one (this one included) that would hold it

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "text": self.text,
            "repo": self.repo,
            "quant": self.quant,
            "needs_bytes": self.needs_bytes,
            "machines": self.machines,
        }


@dataclass(frozen=True)
class Plan:
    """The outcome: the chosen quant (None when nothing fits and nothing was forced), why, and ways out."""

    model: str
    chosen: QuantAssessment | None
    fits: bool
    budget: MemoryBudget
    ctx_size: int
    parallel: int
    source: CatalogSource
    approximate: bool  # sizes or architecture from built-in figures
    assessments: tuple[QuantAssessment, ...]
    incomplete: tuple[IncompleteQuant, ...] = ()
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    shortfall_bytes: int | None = None
    ways_out: tuple[WayOut, ...] = field(default=())
    forced: bool = False
    hosts: tuple[HostShare, ...] = ()  # with RPC workers: each machine's part of the chosen quant
    prefer: Preference = "quality"
    min_speed: float | None = None
    speed_assumptions: tuple[str, ...] = ()

    @property
    def quant(self) -> Quant | None:
        return self.chosen.quant if self.chosen else None

    @property
    def placement(self) -> Placement | None:
        return self.chosen.placement if self.chosen else None

    @property
    def launchable(self) -> bool:
        """Fits, or does not but the user forced it."""
        return self.chosen is not None and (self.fits or self.forced)

    def to_json(self) -> dict[str, object]:
        chosen = self.chosen
        return {
            "model": self.model,
            "quant": chosen.quant.name if chosen else None,
            "fits": self.fits,
            "launchable": self.launchable,
            "forecast_bytes": chosen.forecast.total if chosen else None,
            "budget_bytes": self.budget.total_bytes,
            "placement": self.placement,
            "ctx_size": self.ctx_size,
            "parallel": self.parallel,
            "source": self.source,
            "approximate": self.approximate,
            "files": list(chosen.quant.files) if chosen else [],
            "forecast": chosen.forecast.breakdown() if chosen else None,
            "budget": {
                "kind": self.budget.kind,
                "gpu_bytes": self.budget.gpu_bytes,
                "ram_bytes": self.budget.ram_bytes,
                "worker_bytes": self.budget.worker_bytes,
            },
            "workers": [
                {
                    "endpoint": str(worker.endpoint),
                    "on_this_machine": worker.on_this_machine,
                    "usable_bytes": worker.usable_bytes,
                    "devices": [
                        {
                            "name": device.name,
                            "total_bytes": device.total_bytes,
                            "free_bytes": device.free_bytes,
                            "fit_target_bytes": device.fit_target_bytes,
                        }
                        for device in worker.devices
                    ],
                }
                for worker in self.budget.workers
            ],
            "hosts": [host.to_json() for host in self.hosts],
            "quants": [
                {
                    "name": item.quant.name,
                    "size_bytes": item.quant.size_bytes,
                    "forecast_bytes": item.forecast.total,
                    "fits": item.fits,
                    "placement": item.placement,
                    "bits_per_weight": item.quant.bits_per_weight,
                    "below_quality_floor": item.quant.below_quality_floor,
                    "shards": item.quant.shard_count,
                    "speed": item.speed.to_json() if item.speed else None,
                }
                for item in self.assessments
            ],
            "incomplete": [
                {"name": broken.name, "missing": list(broken.missing), "total": broken.shard_total}
                for broken in self.incomplete
            ],
            "shortfall_bytes": self.shortfall_bytes,
            "ways_out": [way.to_json() for way in self.ways_out],
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "prefer": self.prefer,
            "min_speed": self.min_speed,
            "speed_assumptions": list(self.speed_assumptions),
        }


def plan_launch(
    facts: HardwareFacts,
    catalog: Catalog,
    request: PlanRequest,
    architecture: ArchitectureFacts | None,
    workers: tuple[Worker, ...] = (),
) -> Plan:
    """The plan for ``request`` on the machine ``facts`` describes, with its RPC ``workers``
    (see the module docstring)."""
    if request.parallel < 1:
        raise BadOption(option="--parallel", value=request.parallel, hint="use 1 or more slots")
    validate_ctx_size(request.ctx_size, architecture)
    if not catalog.quants:
        raise NoCompleteQuant(repo=catalog.repo, incomplete=[broken.name for broken in catalog.incomplete])
    named = catalog.find(request.quant) if request.quant else None

    if request.min_speed is not None and not request.min_speed > 0:
        raise BadOption(option="--min-speed", value=request.min_speed, hint="use a positive number of tokens/s")
    budget = memory_budget(facts, workers)
    sparsity = request.sparsity or model_sparsity(
        catalog.repo,
        architecture.expert_count if architecture else 0,
        architecture.expert_used_count if architecture else 0,
    )
    assessments = tuple(_assess(quant, budget, architecture, request, facts, sparsity) for quant in catalog.quants)
    reasons: list[str] = [_budget_reason(budget, facts)]
    warnings: list[str] = list(_cluster_warnings(budget))

    if named is not None:
        chosen: QuantAssessment | None = next(item for item in assessments if item.quant is named)
        reasons.append(f"{named.name} was asked for")
        if named.below_quality_floor:
            warnings.append(f"{named.name} is below {_floor_name()}: expect noticeably worse answers")
    else:
        eligible = [item for item in assessments if item.fits and not item.quant.below_quality_floor]
        chosen, why = _choose(eligible, request)
        if chosen is not None:
            reasons.extend(why)
        elif request.force:
            # Forced, but still never below the quality floor unless a quant is named: the smallest
            # recommended quant, launched although it does not fit.
            recommended = [item for item in assessments if not item.quant.below_quality_floor] or list(assessments)
            chosen = min(recommended, key=lambda item: item.quant.size_bytes)
            warnings.append(f"no quant at or above {_floor_name()} fits; forced to {chosen.quant.name}")
        else:
            reasons.append(f"no quant at or above {_floor_name()} fits in {_gb(budget.total_bytes)}")

    fits = chosen is not None and chosen.fits
    hosts: tuple[HostShare, ...] = ()
    if chosen is not None:
        reasons.append(_forecast_reason(chosen, request.ctx_size))
        reasons.append(_placement_reason(chosen, budget))
        if budget.remote_workers:
            hosts = _hosts(chosen.forecast, budget, facts)
            reasons.append(_hosts_reason(chosen.quant.name, hosts))
        if fits and named is None and request.prefer == "quality" and request.min_speed is None:
            reasons.extend(_why_not_better(chosen, assessments))
        if not fits:
            needed = chosen.forecast.total - budget.total_bytes
            message = f"{chosen.quant.name} needs {_gb(needed)} more than the budget"
            if request.force:
                warnings.append(f"{message}; forced: it would be launched anyway (expect swapping or running out)")
            else:
                reasons.append(message)
    warnings.extend(_disk_warnings(chosen, facts, catalog))
    if catalog.approximate:
        warnings.append("quant sizes are approximate built-in figures: the Hub and the cache could not list them")
    if architecture is not None and architecture.source == "builtin":
        reasons.append("KV cache and Mamba state use built-in (approximate) architecture figures")
    elif architecture is None:
        warnings.append("the model's architecture is unknown: the KV cache is not in the forecast")

    shortfall = None
    ways_out: tuple[WayOut, ...] = ()
    if not fits:
        shortfall = _shortfall(named, assessments, budget)
        ways_out = tuple(_ways_out(facts, catalog, assessments, budget, request, named, shortfall))

    return Plan(
        model=catalog.repo,
        chosen=chosen,
        fits=fits,
        budget=budget,
        ctx_size=request.ctx_size,
        parallel=request.parallel,
        source=catalog.source,
        approximate=catalog.approximate or (architecture is not None and architecture.source == "builtin"),
        assessments=assessments,
        incomplete=catalog.incomplete,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        shortfall_bytes=shortfall,
        ways_out=ways_out,
        forced=request.force,
        hosts=hosts,
        prefer=request.prefer,
        min_speed=request.min_speed,
        speed_assumptions=_speed_assumptions(facts, budget, sparsity),
    )


def _choose(eligible: list[QuantAssessment], request: PlanRequest) -> tuple[QuantAssessment | None, list[str]]:
    """The quant to run among those that fit, by quality (the default), by speed, or the best quality
    that reaches --min-speed; with the reasons, naming what was traded."""
    best_quality = _best(eligible)
    if best_quality is None:
        return None, []
    if request.min_speed is not None:
        reaching = [item for item in eligible if item.tokens_per_s >= request.min_speed]
        if reaching:
            chosen = _best(reaching)
            assert chosen is not None
            why = [f"{chosen.quant.name} is the best quality that reaches {request.min_speed:g} tokens/s"]
        else:
            chosen = max(eligible, key=lambda item: (item.tokens_per_s, _rank(item)))
            why = [
                f"no quant that fits reaches {request.min_speed:g} tokens/s: {chosen.quant.name} is the fastest "
                f"(~{_tps(chosen)})"
            ]
    elif request.prefer == "speed":
        chosen = max(eligible, key=lambda item: (item.tokens_per_s, _rank(item)))
        why = [f"{chosen.quant.name} is the fastest quant at or above {_floor_name()} that fits"]
    else:
        return best_quality, [f"{best_quality.quant.name} is the highest-quality quant that fits"]
    if chosen is not best_quality:
        why.append(
            f"traded: {chosen.quant.name} ({chosen.placement}) ~{_tps(chosen)}; {best_quality.quant.name}, the best "
            f"quality that fits ({best_quality.placement}), would be ~{_tps(best_quality)}"
        )
    return chosen, why


def _tps(item: QuantAssessment) -> str:
    rate = item.speed.generation_tps if item.speed else None
    return "? tokens/s (a bandwidth is unknown)" if rate is None else f"{rate:.1f} tokens/s"


def _speed_assumptions(facts: HardwareFacts, budget: MemoryBudget, sparsity: Sparsity) -> tuple[str, ...]:
    """What the speed forecast assumed, in words: every figure it rests on, and where it came from."""
    words = [
        f"each token reads {sparsity.active_share:.1%} of the weights (from the {sparsity.source}); routed "
        f"experts are {sparsity.expert_share:.0%} of them and spill to RAM first"
    ]
    ram = ram_bandwidth(facts)
    if ram.bytes_per_s:
        words.append(f"RAM reads {ram.bytes_per_s / 1e9:.0f} GB/s ({ram.source})")
    for gpu in facts.gpus:
        bandwidth = gpu_bandwidth(gpu, facts.cpu.model)
        rate = f"{bandwidth.bytes_per_s / 1e9:.0f} GB/s" if bandwidth.bytes_per_s else "an unknown bandwidth"
        words.append(f"{gpu.name} reads {rate} ({bandwidth.source}), at {GPU_EFFICIENCY:.0%} of it")
    if budget.remote_workers:
        words.append(
            f"each RPC worker adds {RPC_TOKEN_OVERHEAD_S * 1e3:.1f} ms per token (loopback; a LAN adds its "
            "round trip); a worker whose bandwidth is unknown is taken as fast as this machine's RAM"
        )
    words.append("prompt speed is rough: 2 FLOPs per active parameter at a share of the chips' peak")
    return tuple(words)


def _assess(
    quant: Quant,
    budget: MemoryBudget,
    architecture: ArchitectureFacts | None,
    request: PlanRequest,
    facts: HardwareFacts | None = None,
    sparsity: Sparsity | None = None,
) -> QuantAssessment:
    forecast = forecast_memory(
        quant.size_bytes,
        architecture,
        ctx_size=request.ctx_size,
        parallel=request.parallel,
        gpu_devices=budget.gpu_devices,
        cuda_devices=budget.cuda_devices,
        cache_type=request.cache_type,
        rpc_devices=budget.rpc_devices,
        rpc_workers=len(budget.workers),
    )
    total = forecast.total
    placement = budget.placement_for(total)
    layers = architecture.n_layer if architecture else 0
    speed = _speed(quant, forecast, placement, budget, facts, sparsity, layers) if facts and sparsity else None
    return QuantAssessment(quant, forecast, total <= budget.total_bytes, placement, speed)


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
    worker_weights: tuple[tuple[str, int, Bandwidth, float | None], ...] = ()
    spill = forecast.total - budget.gpu_bytes if budget.kind == "cuda" and budget.ram_bytes else 0
    if placement == "cluster":
        hosts = _hosts(forecast, budget, facts)
        head_weights = hosts[0].weights_bytes
        spill = hosts[0].planned_bytes - budget.gpu_bytes if budget.ram_bytes else 0
        ram = ram_bandwidth(facts)
        shares = {host.host: host.weights_bytes for host in hosts[1:]}
        worker_weights = tuple(
            (
                str(worker.endpoint),
                shares.get(str(worker.endpoint), 0),
                _worker_bandwidth(worker, ram),
                worker.devices[0].flops or cpu_flops(facts),
            )
            for worker in budget.remote_workers
        )
    placed = place_weights(
        facts,
        weights_bytes=quant.size_bytes,
        placement=placement,
        spill_bytes=spill,
        head_weights_bytes=head_weights,
        worker_weights=worker_weights,
    )
    return forecast_placed(
        facts,
        placed,
        weights_bytes=quant.size_bytes,
        sparsity=sparsity,
        bits_per_weight=quant.bits_per_weight,
        layers=layers,
    )


def _worker_bandwidth(worker: Worker, like_here: Bandwidth) -> Bandwidth:
    known = [device.bandwidth_bytes_per_s for device in worker.devices if device.bandwidth_bytes_per_s]
    if len(known) == len(worker.devices):
        # Its devices work one after another on their layers: the slowest sets the pace.
        return Bandwidth(min(known), "table")
    return Bandwidth(like_here.bytes_per_s, "estimated")


def _rank(item: QuantAssessment) -> tuple[float, bool, float]:
    bits = item.quant.bits_per_weight or 0.0
    all_in_fast_memory = item.placement != "gpu+cpu-experts"
    # Past the ceiling more bits are not better answers, only more bytes: when they must spill
    # experts to RAM anyway, the smaller file (less spilled, faster tokens) wins among those.
    spills = not all_in_fast_memory and bits >= QUALITY_CEILING_BPW
    tiebreak = -float(item.quant.size_bytes) if spills else bits
    return (min(bits, QUALITY_CEILING_BPW), all_in_fast_memory, tiebreak)


def _best(items: Iterable[QuantAssessment]) -> QuantAssessment | None:
    candidates = list(items)
    return max(candidates, key=_rank) if candidates else None


def _shortfall(named: Quant | None, assessments: tuple[QuantAssessment, ...], budget: MemoryBudget) -> int:
    if named is not None:
        target = next(item for item in assessments if item.quant is named)
    else:
        worthwhile = [item for item in assessments if not item.quant.below_quality_floor] or list(assessments)
        target = min(worthwhile, key=lambda item: item.forecast.total)
    return target.forecast.total - budget.total_bytes


def _ways_out(
    facts: HardwareFacts,
    catalog: Catalog,
    assessments: tuple[QuantAssessment, ...],
    budget: MemoryBudget,
    request: PlanRequest,
    named: Quant | None,
    shortfall: int,
) -> list[WayOut]:
    ways: list[WayOut] = []
    repo = catalog.repo
    if named is not None:
        better_fit = _best(item for item in assessments if item.fits and not item.quant.below_quality_floor)
        if better_fit is not None:
            ways.append(
                WayOut(
                    "smaller_quant",
                    f"{better_fit.quant.name} fits (needs {_gb(better_fit.forecast.total)}): "
                    f"name {repo}:{better_fit.quant.name}, or name no quant and let nemolaunch choose",
                    repo,
                    better_fit.quant.name,
                    better_fit.forecast.total,
                )
            )
    below_floor = _best(item for item in assessments if item.fits and item.quant.below_quality_floor)
    if below_floor is not None and named is None:
        ways.append(
            WayOut(
                "below_floor_quant",
                f"{below_floor.quant.name} fits (needs {_gb(below_floor.forecast.total)}) but is below "
                f"{_floor_name()}, the lowest quality worth recommending: "
                f"name {repo}:{below_floor.quant.name} to run it anyway",
                repo,
                below_floor.quant.name,
                below_floor.forecast.total,
            )
        )
    smallest = min(assessments, key=lambda item: item.forecast.total)
    if not smallest.fits:
        ways.append(
            WayOut(
                "smallest_quant",
                f"the smallest quant, {smallest.quant.name} ({_gb(smallest.quant.size_bytes)} of files), "
                f"needs {_gb(smallest.forecast.total)}: "
                f"{_gb(smallest.forecast.total - budget.total_bytes)} more than this machine has",
                repo,
                smallest.quant.name,
                smallest.forecast.total,
            )
        )
    if budget.kind == "metal":
        ways.extend(_metal_limit_way(facts, assessments, budget))
    ways.extend(_smaller_model_ways(catalog, budget, request))
    target = (
        next(item for item in assessments if item.quant is named)
        if named is not None
        else min(
            (item for item in assessments if not item.quant.below_quality_floor),
            key=lambda item: item.forecast.total,
            default=smallest,
        )
    )
    ways.append(_rpc_way(facts, budget, target, shortfall, repo))
    return ways


def _rpc_way(facts: HardwareFacts, budget: MemoryBudget, target: QuantAssessment, shortfall: int, repo: str) -> WayOut:
    """How many machines like this one, pooled over llama.cpp RPC, would hold ``target``."""
    name = target.quant.name
    # A worker like this one brings what its rpc-server would expose: its GPUs, else its RAM; a GPU
    # machine can offer its RAM too (`--device CUDA0,...,CPU`), when that takes fewer machines.
    endpoint = budget.workers[0].endpoint if budget.workers else _PLACEHOLDER_ENDPOINT
    options = [(worker_like(facts, endpoint), "")]
    if facts.gpus:
        everything = [f"{'MTL' if gpu.backend == 'metal' else 'CUDA'}{n}" for n, gpu in enumerate(facts.gpus)]
        options.append((worker_like(facts, endpoint, devices=[*everything, "CPU"]), ",".join([*everything, "CPU"])))
    best = None
    for like_this, devices in options:
        count = machines_needed(
            forecast_bytes=target.forecast.total - budget.worker_bytes,
            head_bytes=budget.head_bytes,
            worker_bytes=like_this.usable_bytes,
        )
        if count is not None and (best is None or count < best[0]):
            best = (count, like_this, devices)
    device_flag = f" --device {best[2]}" if best and best[2] else ""
    how = (
        f"run `nemolaunch rpc-worker --host <its LAN address>{device_flag}` on each worker (trusted networks only: "
        "RPC has no authentication or encryption), then `nemolaunch serve --rpc HOST:50052,...` here"
    )
    if best is None:
        text = (
            f"pool machines with llama.cpp RPC: about {_gb(shortfall)} more memory in total runs {name}; "
            f"{how}; slower than one machine"
        )
    elif budget.workers:
        needed, like_this, _ = best
        more = needed - 1
        text = (
            f"pool more machines with llama.cpp RPC: {more} more worker(s) like this machine "
            f"({_gb(like_this.usable_bytes)} each) would hold {name} (needs {_gb(target.forecast.total)}); {how}"
        )
    else:
        needed, like_this, _ = best
        text = (
            f"pool machines with llama.cpp RPC: {needed} machines like this one ({_gb(budget.head_bytes)} here, "
            f"{_gb(like_this.usable_bytes)} for each worker) would hold {name} (needs {_gb(target.forecast.total)}); "
            f"{how}; slower than one machine"
        )
    return WayOut("rpc", text, repo, name, shortfall, machines=best[0] if best else None)


_PLACEHOLDER_ENDPOINT = RpcEndpoint("worker", DEFAULT_RPC_PORT)


def _hosts(forecast: Forecast, budget: MemoryBudget, facts: HardwareFacts) -> tuple[HostShare, ...]:
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


def _hosts_reason(name: str, hosts: tuple[HostShare, ...]) -> str:
    parts = [f"{host.host} {_gb(host.planned_bytes)} of {_gb(host.free_bytes)}" for host in hosts]
    return f"{name} spreads over {len(hosts)} machines (approximate: llama.cpp splits by whole layers): " + ", ".join(
        parts
    )


def _cluster_warnings(budget: MemoryBudget) -> list[str]:
    warnings = []
    local = [str(worker.endpoint) for worker in budget.workers if worker.on_this_machine]
    if local:
        warnings.append(
            f"RPC worker(s) {', '.join(local)} run on this machine: their memory is this machine's own, counted once"
        )
    for worker in budget.remote_workers:
        for device in worker.devices:
            if device.unmeasured:
                warnings.append(
                    f"{worker.endpoint} ({device.name}) reports all {_gb(device.total_bytes)} as free, as llama.cpp "
                    f"does for a CPU: the plan leaves {_gb(device.fit_target_bytes)} of it to that machine "
                    "(passed to llama.cpp as --fit-target)"
                )
    return warnings


def _metal_limit_way(
    facts: HardwareFacts, assessments: tuple[QuantAssessment, ...], budget: MemoryBudget
) -> list[WayOut]:
    # macOS lets the GPU wire more than its default share of RAM when asked
    # (iogpu.wired_limit_mb); leave MACOS_RESERVE_BYTES to the system.
    raised = min(facts.memory.total_bytes - MACOS_RESERVE_BYTES, facts.memory.available_bytes)
    if raised <= budget.gpu_bytes:
        return []
    would_fit = _best(
        item for item in assessments if item.forecast.total <= raised and not item.quant.below_quality_floor
    )
    if would_fit is None:
        return []
    limit_mb = (facts.memory.total_bytes - MACOS_RESERVE_BYTES) // (1024 * 1024)
    return [
        WayOut(
            "metal_limit",
            f"let the GPU use more of the RAM: `sudo sysctl iogpu.wired_limit_mb={limit_mb}` "
            f"(leaves 16 GiB to macOS, until reboot) makes room for {would_fit.quant.name} "
            f"(needs {_gb(would_fit.forecast.total)})",
            None,
            would_fit.quant.name,
            would_fit.forecast.total,
        )
    ]


def _smaller_model_ways(catalog: Catalog, budget: MemoryBudget, request: PlanRequest) -> list[WayOut]:
    ways: list[WayOut] = []
    for model in SMALLER_NEMOTRON_MODELS:
        if model.repo.lower() == catalog.repo.lower():
            continue
        way = _smaller_model_way(model, budget, request)
        if way is not None:
            ways.append(way)
    return ways


def _smaller_model_way(model: BuiltinModel, budget: MemoryBudget, request: PlanRequest) -> WayOut | None:
    smaller = builtin_catalog(model.repo)
    assert smaller is not None
    # No header for these models here: the forecast's unknown-architecture
    # rule (bigger margin, no KV count) is rough but enough to say "fits".
    unknown_arch_request = PlanRequest(ctx_size=request.ctx_size, parallel=request.parallel)
    fitting = _best(
        item
        for item in (_assess(quant, budget, None, unknown_arch_request) for quant in smaller.quants)
        if item.fits and not item.quant.below_quality_floor
    )
    if fitting is None:
        return None
    return WayOut(
        "smaller_model",
        f"{model.title} fits: {model.repo}:{fitting.quant.name} "
        f"({_gb(fitting.quant.size_bytes)} of files, about {_gb(fitting.forecast.total)} in all)",
        model.repo,
        fitting.quant.name,
        fitting.forecast.total,
    )


def _why_not_better(chosen: QuantAssessment, assessments: tuple[QuantAssessment, ...]) -> list[str]:
    chosen_bits = chosen.quant.bits_per_weight or 0.0
    better = [item for item in assessments if (item.quant.bits_per_weight or 0.0) > chosen_bits]
    if not better:
        return []
    nearest = min(better, key=lambda item: item.forecast.total)
    if not nearest.fits:
        return [
            f"the next better quant, {nearest.quant.name}, needs {_gb(nearest.forecast.total)}, more than the budget"
        ]
    # It fits but ranked lower: only the quality ceiling does that.
    return [
        f"{nearest.quant.name} would fit only with experts in RAM; past {QUALITY_CEILING_BPW} bits per "
        "weight quality no longer improves, so the quant that stays in GPU memory wins"
    ]


def _budget_reason(budget: MemoryBudget, facts: HardwareFacts) -> str:
    head = _head_budget_reason(budget, facts)
    if not budget.remote_workers:
        return head
    workers = ", ".join(f"{worker.endpoint} {_gb(worker.usable_bytes)}" for worker in budget.remote_workers)
    return f"{head}; + {len(budget.remote_workers)} RPC worker(s): {workers} = {_gb(budget.total_bytes)} in all"


def _head_budget_reason(budget: MemoryBudget, facts: HardwareFacts) -> str:
    if budget.kind == "metal":
        return f"budget: {_gb(budget.gpu_bytes)}, the Apple GPU's working-set limit (unified memory, counted once)"
    if budget.kind == "cpu":
        return f"budget: {_gb(budget.ram_bytes)} of RAM available (no GPU: llama.cpp runs on the CPU)"
    gpus = [gpu for gpu in facts.gpus if gpu.backend == "cuda"]
    if budget.ram_bytes == 0:
        return f"budget: {_gb(budget.gpu_bytes)} of unified memory shared by {len(gpus)} CUDA GPU(s)"
    return (
        f"budget: {len(gpus)} CUDA GPU(s) with {_gb(budget.gpu_bytes)} free "
        f"+ {_gb(budget.ram_bytes)} of RAM available = {_gb(budget.head_bytes)}"
    )


def _forecast_reason(item: QuantAssessment, ctx_size: int) -> str:
    f = item.forecast
    return (
        f"{item.quant.name} needs {_gb(f.total)} at {ctx_size} tokens of context: weights {_gb(f.weights)}, "
        f"KV cache {_gb(f.kv)}, Mamba state {_gb(f.recurrent)}, compute buffers {_gb(f.compute)}, "
        f"llama-server itself {f.runtime / 1e6:.0f} MB, safety margin {_gb(f.margin)}"
    )


def _placement_reason(item: QuantAssessment, budget: MemoryBudget) -> str:
    if item.placement == "gpu":
        return "placement gpu: everything fits in GPU memory"
    if item.placement == "gpu+cpu-experts":
        return (
            f"placement gpu+cpu-experts: {_gb(budget.gpu_bytes)} of GPU memory is not enough alone; "
            "llama.cpp's --fit fills the GPUs and keeps the remaining MoE experts in RAM"
        )
    if item.placement == "metal":
        return "placement metal: the whole model runs on the Apple GPU"
    if item.placement == "cluster":
        gpus = ", then on this machine's GPUs" if budget.kind == "cuda" else ""
        return (
            "placement cluster: llama.cpp puts layers on the RPC workers first, in proportion to their free memory "
            f"(--fit reads each worker's memory over RPC){gpus}, the rest in this machine's "
            f"{'memory' if budget.kind == 'metal' else 'RAM'}; this machine keeps the token embeddings and samples"
        )
    return "placement cpu: the whole model runs on the CPU, from RAM"


def _disk_warnings(chosen: QuantAssessment | None, facts: HardwareFacts, catalog: Catalog) -> list[str]:
    # A cache listing means the files are already on disk.
    if chosen is None or facts.disk is None or catalog.source == "cache":
        return []
    if chosen.quant.size_bytes <= facts.disk.free_bytes:
        return []
    return [
        f"{chosen.quant.name} is {_gb(chosen.quant.size_bytes)} but only {_gb(facts.disk.free_bytes)} "
        f"is free at {facts.disk.path} (files already downloaded there need no more room)"
    ]


def _floor_name() -> str:
    return f"UD-Q2_K_XL ({QUALITY_FLOOR_BPW} bits per weight)"


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"

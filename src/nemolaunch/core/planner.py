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
from nemolaunch.core.forecast import (
    DEFAULT_CTX_SIZE,
    ArchitectureFacts,
    Forecast,
    GiB,
    forecast_memory,
    validate_ctx_size,
)
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.errors import BadOption, NoCompleteQuant

Placement = Literal["gpu", "gpu+cpu-experts", "cpu", "metal"]
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


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a model may use on this machine."""

    kind: BudgetKind
    gpu_bytes: int  # free memory of discrete CUDA GPUs, or the Metal / unified GPU budget
    ram_bytes: int  # RAM available on top of it; 0 where GPU memory is the RAM
    gpu_devices: int
    cuda_devices: int

    @property
    def total_bytes(self) -> int:
        return self.gpu_bytes + self.ram_bytes

    def placement_for(self, forecast_bytes: int) -> Placement:
        if self.kind == "metal":
            return "metal"
        if self.kind == "cpu":
            return "cpu"
        return "gpu" if forecast_bytes <= self.gpu_bytes else "gpu+cpu-experts"


def memory_budget(facts: HardwareFacts) -> MemoryBudget:
    """GPU free memory + RAM available on CUDA machines; the Metal budget on Apple; RAM otherwise.

    Unified memory (Apple silicon, CUDA boards whose GPU uses the system RAM) is
    counted once, as GPU memory, never again as RAM.
    """
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


@dataclass(frozen=True)
class WayOut:
    """One way to get a model running when the plan does not fit."""

    kind: Literal["smaller_quant", "below_floor_quant", "smallest_quant", "metal_limit", "smaller_model", "rpc"]
    text: str
    repo: str | None = None
    quant: str | None = None
    needs_bytes: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "text": self.text,
            "repo": self.repo,
            "quant": self.quant,
            "needs_bytes": self.needs_bytes,
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
            },
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
        }


def plan_launch(
    facts: HardwareFacts,
    catalog: Catalog,
    request: PlanRequest,
    architecture: ArchitectureFacts | None,
) -> Plan:
    """The plan for ``request`` on the machine ``facts`` describes (see the module docstring)."""
    if request.parallel < 1:
        raise BadOption(option="--parallel", value=request.parallel, hint="use 1 or more slots")
    validate_ctx_size(request.ctx_size, architecture)
    if not catalog.quants:
        raise NoCompleteQuant(repo=catalog.repo, incomplete=[broken.name for broken in catalog.incomplete])
    named = catalog.find(request.quant) if request.quant else None

    budget = memory_budget(facts)
    assessments = tuple(_assess(quant, budget, architecture, request) for quant in catalog.quants)
    reasons: list[str] = [_budget_reason(budget, facts)]
    warnings: list[str] = []

    if named is not None:
        chosen: QuantAssessment | None = next(item for item in assessments if item.quant is named)
        reasons.append(f"{named.name} was asked for")
        if named.below_quality_floor:
            warnings.append(f"{named.name} is below {_floor_name()}: expect noticeably worse answers")
    else:
        chosen = _best(item for item in assessments if item.fits and not item.quant.below_quality_floor)
        if chosen is not None:
            reasons.append(f"{chosen.quant.name} is the highest-quality quant that fits")
        elif request.force:
            # Forced, but still never below the quality floor unless a quant is named: the smallest
            # recommended quant, launched although it does not fit.
            recommended = [item for item in assessments if not item.quant.below_quality_floor] or list(assessments)
            chosen = min(recommended, key=lambda item: item.quant.size_bytes)
            warnings.append(f"no quant at or above {_floor_name()} fits; forced to {chosen.quant.name}")
        else:
            reasons.append(f"no quant at or above {_floor_name()} fits in {_gb(budget.total_bytes)}")

    fits = chosen is not None and chosen.fits
    if chosen is not None:
        reasons.append(_forecast_reason(chosen, request.ctx_size))
        reasons.append(_placement_reason(chosen, budget))
        if fits and named is None:
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
    )


def _assess(
    quant: Quant, budget: MemoryBudget, architecture: ArchitectureFacts | None, request: PlanRequest
) -> QuantAssessment:
    forecast = forecast_memory(
        quant.size_bytes,
        architecture,
        ctx_size=request.ctx_size,
        parallel=request.parallel,
        gpu_devices=budget.gpu_devices,
        cuda_devices=budget.cuda_devices,
        cache_type=request.cache_type,
    )
    total = forecast.total
    return QuantAssessment(quant, forecast, total <= budget.total_bytes, budget.placement_for(total))


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
        named.name
        if named is not None
        else min(
            (item for item in assessments if not item.quant.below_quality_floor),
            key=lambda item: item.forecast.total,
            default=smallest,
        ).quant.name
    )
    ways.append(
        WayOut(
            "rpc",
            f"pool more machines with llama.cpp RPC: about {_gb(shortfall)} more memory in total runs {target}. "
            "Run `rpc-server -H <LAN address>` on each (trusted networks only: it has no authentication), "
            f"then `nemolaunch serve --quant {target} --force -- --rpc HOST:50052,...`; slower than one machine",
            repo,
            target,
            shortfall,
        )
    )
    return ways


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
    if budget.kind == "metal":
        return f"budget: {_gb(budget.gpu_bytes)}, the Apple GPU's working-set limit (unified memory, counted once)"
    if budget.kind == "cpu":
        return f"budget: {_gb(budget.ram_bytes)} of RAM available (no GPU: llama.cpp runs on the CPU)"
    gpus = [gpu for gpu in facts.gpus if gpu.backend == "cuda"]
    if budget.ram_bytes == 0:
        return f"budget: {_gb(budget.gpu_bytes)} of unified memory shared by {len(gpus)} CUDA GPU(s)"
    return (
        f"budget: {len(gpus)} CUDA GPU(s) with {_gb(budget.gpu_bytes)} free "
        f"+ {_gb(budget.ram_bytes)} of RAM available = {_gb(budget.total_bytes)}"
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

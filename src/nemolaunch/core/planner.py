"""The plan: which quant to run on this machine, where it goes, and why.

``plan_launch`` is a pure function of hardware facts, a quant catalog, the
model's architecture facts and the request. It picks the highest-quality quant
whose forecast fits the memory budget and names the placement. It never
decides how layers are split: llama.cpp's ``--fit`` (on by default) fills the
GPUs and keeps the MoE experts that do not fit in RAM, and the plan never asks
for ``--n-cpu-moe``, which switches ``--fit`` off (llama.cpp issue 27872).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from nemolaunch.core.assessment import (
    PlanRequest,
    Preference,
    QuantAssessment,
    assess,
    best,
    floor_name,
    gb,
    hosts_of,
    max_context,
    rank,
)
from nemolaunch.core.budget import BudgetKind, MemoryBudget, Placement, memory_budget
from nemolaunch.core.catalog import (
    Catalog,
    CatalogSource,
    IncompleteQuant,
    Quant,
)
from nemolaunch.core.cluster import HostShare, Worker
from nemolaunch.core.forecast import (
    ArchitectureFacts,
    validate_ctx_size,
)
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.core.load_forecast import LoadForecast, forecast_load
from nemolaunch.core.plan_reasons import (
    budget_reason,
    cluster_warnings,
    disk_warnings,
    forecast_reason,
    hosts_reason,
    placement_reason,
    speed_assumptions,
    why_not_better,
)
from nemolaunch.core.speed import (
    model_sparsity,
)
from nemolaunch.core.ways_out import WayOut, find_ways_out, shortfall_of
from nemolaunch.errors import BadOption, NoCompleteQuant

__all__ = [
    "BudgetKind",
    "MemoryBudget",
    "Placement",
    "Plan",
    "PlanRequest",
    "Preference",
    "QuantAssessment",
    "WayOut",
    "memory_budget",
    "plan_launch",
]


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
    load: LoadForecast | None = None  # with RPC workers: what the load sends over the network
    prefer: Preference = "quality"
    min_speed: float | None = None
    speed_assumptions: tuple[str, ...] = ()
    cache_type: str = "f16"
    compared_ctx: int = 0  # the context the quants were compared at (ctx_size differs with --ctx-size max)
    allow_disk: bool = False

    @property
    def paged(self) -> bool:
        """The chosen quant runs with experts paged from disk: launched with mmap, never --mlock."""
        return self.chosen is not None and self.chosen.paged

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
            "allow_disk": self.allow_disk,
            "disk": chosen.disk.to_json() if chosen and chosen.paged and chosen.disk else None,
            "ctx_size": self.ctx_size,
            "cache_type": self.cache_type,
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
            "load": self.load.to_json() if self.load else None,
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
                    "max_ctx_size": item.max_ctx,
                    "disk": item.disk.to_json() if item.disk else None,
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
    assessments = tuple(assess(quant, budget, architecture, request, facts, sparsity) for quant in catalog.quants)
    reasons: list[str] = [budget_reason(budget, facts)]
    warnings: list[str] = list(cluster_warnings(budget))

    if named is not None:
        chosen: QuantAssessment | None = next(item for item in assessments if item.quant is named)
        reasons.append(f"{named.name} was asked for")
        if named.below_quality_floor:
            warnings.append(f"{named.name} is below {floor_name()}: expect noticeably worse answers")
    else:
        eligible = [item for item in assessments if item.fits and not item.paged and not item.quant.below_quality_floor]
        chosen, why = _choose(eligible, request)
        if chosen is None and request.allow_disk:
            chosen, why = _choose_paged(assessments)
        if chosen is not None:
            reasons.extend(why)
        elif request.force:
            # Forced, but still never below the quality floor unless a quant is named: the smallest
            # recommended quant, launched although it does not fit.
            recommended = [item for item in assessments if not item.quant.below_quality_floor] or list(assessments)
            chosen = min(recommended, key=lambda item: item.quant.size_bytes)
            warnings.append(f"no quant at or above {floor_name()} fits; forced to {chosen.quant.name}")
        else:
            reasons.append(f"no quant at or above {floor_name()} fits in {gb(budget.total_bytes)}")

    ctx_size = request.ctx_size
    if request.max_context and chosen is not None and chosen.max_ctx is not None and architecture is not None:
        # The quant was chosen at the usual context; now give it the longest one that fits beside it.
        ctx_size = chosen.max_ctx
        chosen = assess(chosen.quant, budget, architecture, replace(request, ctx_size=ctx_size), facts, sparsity)
        limit = " (the model's maximum)" if ctx_size == architecture.n_ctx_train else ""
        reasons.append(f"--ctx-size max: {ctx_size} tokens{limit} is the longest context that fits beside it")
    fits = chosen is not None and chosen.fits
    hosts: tuple[HostShare, ...] = ()
    load: LoadForecast | None = None
    if chosen is not None:
        reasons.append(forecast_reason(chosen, ctx_size))
        reasons.append(placement_reason(chosen, budget))
        if budget.remote_workers:
            hosts = hosts_of(chosen.forecast, budget, facts)
            reasons.append(hosts_reason(chosen.quant.name, hosts))
            load = load_of(hosts, budget.remote_workers)
            reasons.append(load.words())
        if fits and not chosen.paged and named is None and request.prefer == "quality" and request.min_speed is None:
            reasons.extend(why_not_better(chosen, assessments))
        reasons.extend(_kv_type_reasons(chosen, assessments, request, budget, architecture, named is not None))
        if not fits:
            needed = chosen.forecast.total - budget.total_bytes
            message = f"{chosen.quant.name} needs {gb(needed)} more than the budget"
            if request.force:
                warnings.append(f"{message}; forced: it would be launched anyway (expect swapping or running out)")
            else:
                reasons.append(message)
    warnings.extend(disk_warnings(chosen, facts, catalog))
    if catalog.approximate:
        warnings.append("quant sizes are approximate built-in figures: the Hub and the cache could not list them")
    if architecture is not None and architecture.source == "builtin":
        reasons.append("KV cache and Mamba state use built-in (approximate) architecture figures")
    elif architecture is None:
        warnings.append("the model's architecture is unknown: the KV cache is not in the forecast")

    shortfall = None
    ways_out: tuple[WayOut, ...] = ()
    if not fits:
        shortfall = shortfall_of(named, assessments, budget)
        ways_out = tuple(find_ways_out(facts, catalog, assessments, budget, request, named, shortfall))

    return Plan(
        model=catalog.repo,
        chosen=chosen,
        fits=fits,
        budget=budget,
        ctx_size=ctx_size,
        compared_ctx=request.ctx_size,
        parallel=request.parallel,
        cache_type=request.cache_type,
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
        load=load,
        prefer=request.prefer,
        min_speed=request.min_speed,
        speed_assumptions=speed_assumptions(facts, budget, sparsity, disk=chosen is not None and chosen.paged),
        allow_disk=request.allow_disk,
    )


def _choose_paged(assessments: tuple[QuantAssessment, ...]) -> tuple[QuantAssessment | None, list[str]]:
    """Nothing fits in memory and --allow-disk: the smallest quant at or above the floor that runs with
    experts paged from disk. Smallest, because every byte past memory is read from disk again and
    again: the smallest file is the fastest by far, and its quality is the floor's."""
    paged = [item for item in assessments if item.paged and not item.quant.below_quality_floor]
    if not paged:
        return None, []
    chosen = min(paged, key=lambda item: item.quant.size_bytes)
    assert chosen.disk is not None
    return chosen, [
        f"no quant at or above {floor_name()} fits in memory; --allow-disk: {chosen.quant.name}, the smallest, "
        f"runs with {gb(chosen.disk.disk_bytes)} of its experts paged from disk (~{_tps(chosen)})"
    ]


def _kv_type_reasons(
    chosen: QuantAssessment,
    assessments: tuple[QuantAssessment, ...],
    request: PlanRequest,
    budget: MemoryBudget,
    architecture: ArchitectureFacts | None,
    named: bool,
) -> list[str]:
    """When an 8-bit KV cache (about half the f16 one) would buy a better quant or a longer context."""
    if request.cache_type != "f16" or architecture is None or not architecture.attention_layers:
        return []
    smaller = replace(request, cache_type="q8_0")
    words = []
    bits = chosen.quant.bits_per_weight or 0.0
    better = [item for item in assessments if (item.quant.bits_per_weight or 0.0) > bits and not item.fits]
    if better and not named:
        following = min(better, key=lambda item: item.forecast.total)
        alternative = assess(following.quant, budget, architecture, replace(smaller, ctx_size=request.ctx_size))
        if alternative.fits and not following.quant.below_quality_floor:
            words.append(
                f"with --cache-type q8_0 (an 8-bit KV cache, about half the size) {following.quant.name} would fit "
                f"({gb(alternative.forecast.total)})"
            )
    if request.max_context and chosen.max_ctx is not None:
        longer = max_context(chosen.quant, budget, architecture, smaller)
        if longer is not None and longer > chosen.max_ctx:
            words.append(f"with --cache-type q8_0 the context could reach {longer} tokens instead of {chosen.max_ctx}")
    return words


def _choose(eligible: list[QuantAssessment], request: PlanRequest) -> tuple[QuantAssessment | None, list[str]]:
    """The quant to run among those that fit, by quality (the default), by speed, or the best quality
    that reaches --min-speed; with the reasons, naming what was traded."""
    best_quality = best(eligible)
    if best_quality is None:
        return None, []
    if request.min_speed is not None:
        reaching = [item for item in eligible if item.tokens_per_s >= request.min_speed]
        if reaching:
            chosen = best(reaching)
            assert chosen is not None
            why = [f"{chosen.quant.name} is the best quality that reaches {request.min_speed:g} tokens/s"]
        else:
            chosen = max(eligible, key=lambda item: (item.tokens_per_s, rank(item)))
            why = [
                f"no quant that fits reaches {request.min_speed:g} tokens/s: {chosen.quant.name} is the fastest "
                f"(~{_tps(chosen)})"
            ]
    elif request.prefer == "speed":
        chosen = max(eligible, key=lambda item: (item.tokens_per_s, rank(item)))
        why = [f"{chosen.quant.name} is the fastest quant at or above {floor_name()} that fits"]
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


def load_of(hosts: tuple[HostShare, ...], workers: tuple[Worker, ...]) -> LoadForecast:
    """The load's network time: each worker's weights (its share of the plan) over its link."""
    links = {str(worker.endpoint): worker.link_bytes_per_s for worker in workers}
    return forecast_load([(host.host, host.weights_bytes, links.get(host.host), None) for host in hosts[1:]])

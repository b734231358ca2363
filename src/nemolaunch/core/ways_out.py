"""When the plan does not fit: the other quants, models and machines that would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nemolaunch.core.assessment import PlanRequest, QuantAssessment, assess, best, floor_name, gb
from nemolaunch.core.budget import MemoryBudget
from nemolaunch.core.catalog import (
    SMALLER_NEMOTRON_MODELS,
    BuiltinModel,
    Catalog,
    Quant,
    builtin_catalog,
)
from nemolaunch.core.cluster import RpcEndpoint, machines_needed, worker_like
from nemolaunch.core.forecast import (
    GiB,
)
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.core.launch import DEFAULT_RPC_PORT

#: What to leave macOS when suggesting a higher iogpu.wired_limit_mb.
MACOS_RESERVE_BYTES = 16 * GiB


@dataclass(frozen=True)
class WayOut:
    """One way to get a model running when the plan does not fit."""

    kind: Literal["smaller_quant", "below_floor_quant", "smallest_quant", "disk", "metal_limit", "smaller_model", "rpc"]
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


def shortfall_of(named: Quant | None, assessments: tuple[QuantAssessment, ...], budget: MemoryBudget) -> int:
    if named is not None:
        target = next(item for item in assessments if item.quant is named)
    else:
        worthwhile = [item for item in assessments if not item.quant.below_quality_floor] or list(assessments)
        target = min(worthwhile, key=lambda item: item.forecast.total)
    return target.forecast.total - budget.total_bytes


def find_ways_out(
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
        better_fit = best(item for item in assessments if item.fits and not item.quant.below_quality_floor)
        if better_fit is not None:
            ways.append(
                WayOut(
                    "smaller_quant",
                    f"{better_fit.quant.name} fits (needs {gb(better_fit.forecast.total)}): "
                    f"name {repo}:{better_fit.quant.name}, or name no quant and let nemolaunch choose",
                    repo,
                    better_fit.quant.name,
                    better_fit.forecast.total,
                )
            )
    below_floor = best(item for item in assessments if item.fits and item.quant.below_quality_floor)
    if below_floor is not None and named is None:
        ways.append(
            WayOut(
                "below_floor_quant",
                f"{below_floor.quant.name} fits (needs {gb(below_floor.forecast.total)}) but is below "
                f"{floor_name()}, the lowest quality worth recommending: "
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
                f"the smallest quant, {smallest.quant.name} ({gb(smallest.quant.size_bytes)} of files), "
                f"needs {gb(smallest.forecast.total)}: "
                f"{gb(smallest.forecast.total - budget.total_bytes)} more than this machine has",
                repo,
                smallest.quant.name,
                smallest.forecast.total,
            )
        )
    if not request.allow_disk:
        ways.extend(_disk_way(assessments, named, repo))
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
            f"pool machines with llama.cpp RPC: about {gb(shortfall)} more memory in total runs {name}; "
            f"{how}; slower than one machine"
        )
    elif budget.workers:
        needed, like_this, _ = best
        more = needed - 1
        text = (
            f"pool more machines with llama.cpp RPC: {more} more worker(s) like this machine "
            f"({gb(like_this.usable_bytes)} each) would hold {name} (needs {gb(target.forecast.total)}); {how}"
        )
    else:
        needed, like_this, _ = best
        text = (
            f"pool machines with llama.cpp RPC: {needed} machines like this one ({gb(budget.head_bytes)} here, "
            f"{gb(like_this.usable_bytes)} for each worker) would hold {name} (needs {gb(target.forecast.total)}); "
            f"{how}; slower than one machine"
        )
    return WayOut("rpc", text, repo, name, shortfall, machines=best[0] if best else None)


_PLACEHOLDER_ENDPOINT = RpcEndpoint("worker", DEFAULT_RPC_PORT)


def _disk_way(assessments: tuple[QuantAssessment, ...], named: Quant | None, repo: str) -> list[WayOut]:
    """--allow-disk: the quant it would run (the named one, else the smallest at or above the floor) and how slowly."""
    if named is not None:
        candidates = [item for item in assessments if item.quant is named and item.disk is not None]
    else:
        paged = [item for item in assessments if item.disk is not None and not item.quant.below_quality_floor]
        candidates = sorted(paged, key=lambda item: item.quant.size_bytes)[:1]
    if not candidates:
        return []
    item = candidates[0]
    assert item.disk is not None
    rate = item.disk.speed.generation_tps
    speed = f"~{rate:.1f} tokens/s" if rate else "at an unknown speed"
    return [
        WayOut(
            "disk",
            f"with --allow-disk: {item.quant.name}, {speed} ({gb(item.disk.read_per_token * 100)} read from disk "
            f"per 100 tokens; {gb(item.disk.disk_bytes)} of its experts paged from disk; approximate)",
            repo,
            item.quant.name,
            item.forecast.total,
        )
    ]


def _metal_limit_way(
    facts: HardwareFacts, assessments: tuple[QuantAssessment, ...], budget: MemoryBudget
) -> list[WayOut]:
    # macOS lets the GPU wire more than its default share of RAM when asked
    # (iogpu.wired_limit_mb); leave MACOS_RESERVE_BYTES to the system.
    raised = min(facts.memory.total_bytes - MACOS_RESERVE_BYTES, facts.memory.available_bytes)
    if raised <= budget.gpu_bytes:
        return []
    would_fit = best(
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
            f"(needs {gb(would_fit.forecast.total)})",
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
    fitting = best(
        item
        for item in (assess(quant, budget, None, unknown_arch_request) for quant in smaller.quants)
        if item.fits and not item.quant.below_quality_floor
    )
    if fitting is None:
        return None
    return WayOut(
        "smaller_model",
        f"{model.title} fits: {model.repo}:{fitting.quant.name} "
        f"({gb(fitting.quant.size_bytes)} of files, about {gb(fitting.forecast.total)} in all)",
        model.repo,
        fitting.quant.name,
        fitting.forecast.total,
    )

"""What `plan`, `serve`, `run` and `download` share: reading the request, planning, showing the plan.

Gathering facts (probe or ``--hardware FILE``), the catalog (hub, cache or
built-in) and the architecture is I/O through adapters; ``plan_launch`` is the
pure decision; rendering is here, for people, on stderr, so that stdout can
carry a command line or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nemolaunch import ULTRA_REPO
from nemolaunch.cli.output import err_console, styled, warn
from nemolaunch.errors import (
    BadOption,
    ContextSizeNotPositive,
    NemolaunchError,
    NotCachedOffline,
    NothingFits,
    QuantDoesNotFit,
    UnknownQuant,
)
from nemolaunch.hub.deadline import DEFAULT_HUB_DEADLINE_S

if TYPE_CHECKING:
    from nemolaunch.core.catalog import Catalog, ModelReference
    from nemolaunch.core.cluster import Worker
    from nemolaunch.core.forecast import ArchitectureFacts
    from nemolaunch.core.hardware import HardwareFacts
    from nemolaunch.core.planner import Plan, Preference, QuantAssessment
    from nemolaunch.core.speed import Sparsity
    from nemolaunch.hub.listing import RepoListing


@dataclass(frozen=True)
class ModelSpec:
    """``--model`` read: a local GGUF file, or a Hub repository with an optional quant."""

    local: Path | None = None
    reference: ModelReference | None = None


def read_model_spec(text: str | None) -> ModelSpec:
    from nemolaunch.core.catalog import ModelReference, parse_model_reference

    if text is None:
        return ModelSpec(reference=ModelReference(repo=ULTRA_REPO))
    path = Path(text).expanduser()
    # A file, a name ending in .gguf, or an explicit path is local; anything else is owner/repo[:QUANT]
    # (so a folder ./acme/Model-GGUF in the current directory does not hide the Hub repository).
    if path.is_file() or text.lower().endswith(".gguf") or text.startswith((".", "/", "~")):
        return ModelSpec(local=path)
    return ModelSpec(reference=parse_model_reference(text))


@dataclass(frozen=True)
class PlannedModel:
    plan: Plan
    catalog: Catalog
    facts: HardwareFacts
    local_files: tuple[Path, ...] | None  # every file of the chosen quant, when all are downloaded
    listing: RepoListing | None = None  # the Hub's listing the catalog came from: a download reuses it


def plan_model(
    reference: ModelReference,
    *,
    quant: str | None,
    ctx_size: int | None,
    force: bool,
    parallel: int,
    hardware_file: Path | None,
    workers: tuple[Worker, ...] = (),
    prefer: Preference = "quality",
    min_speed: float | None = None,
    sparsity: Sparsity | None = None,
    measure_bandwidth: bool = False,
    longest: bool = False,
    cache_type: str = "f16",
    allow_disk: bool = False,
    hub_deadline_s: float = DEFAULT_HUB_DEADLINE_S,
) -> PlannedModel:
    """Plan ``reference`` for this machine (or the one in ``hardware_file``) with its RPC ``workers``
    (live ones, or those a cluster file records), warning as it goes."""
    from nemolaunch.core.forecast import DEFAULT_CTX_SIZE
    from nemolaunch.core.planner import PlanRequest, plan_launch
    from nemolaunch.hub.listing import cached_quant_paths, load_catalog

    if quant is not None and not quant.strip():
        raise BadOption(option="--quant", value="''", hint="name a quant such as UD-Q4_K_XL, or leave --quant out")
    if reference.quant and quant and reference.quant.upper() != quant.upper():
        raise BadOption(
            option="--quant", value=quant, hint=f"the model names {reference.quant}; give the quant only once"
        )
    if parallel < 1:
        raise BadOption(option="--parallel", value=parallel, hint="use 1 or more slots")
    if ctx_size is not None and ctx_size <= 0:
        raise ContextSizeNotPositive(ctx_size=ctx_size)  # before any listing or probing
    # The speed forecast wants this machine's RAM bandwidth: measured (a fraction of a second) for plan,
    # and for a launch that chooses by speed.
    # With --allow-disk the disk's read speed decides how fast a paged quant runs: measured too (about a second).
    facts, workers = machine(
        hardware_file,
        workers,
        measure_bandwidth=measure_bandwidth or prefer == "speed" or bool(min_speed) or allow_disk,
        measure_disk=allow_disk,
    )
    lookup = load_catalog(reference.repo, deadline_s=hub_deadline_s)
    for message in lookup.warnings:
        warn(message)
    catalog = lookup.catalog
    architecture = _architecture(catalog, deadline_s=hub_deadline_s)
    request = PlanRequest(
        quant=reference.quant or quant,
        ctx_size=ctx_size if ctx_size is not None else _default_ctx(architecture, DEFAULT_CTX_SIZE),
        force=force,
        parallel=parallel,
        prefer=prefer,
        min_speed=min_speed,
        sparsity=sparsity,
        max_context=longest,
        cache_type=cache_type,
        allow_disk=allow_disk,
    )
    try:
        plan = plan_launch(facts, catalog, request, architecture, workers)
    except UnknownQuant:
        if lookup.offline_reason is not None and catalog.source == "cache":
            # Offline the cache lists only what was downloaded: the quant may well exist on the Hub.
            raise NotCachedOffline(
                repo=catalog.repo, quant=request.quant, reason=lookup.offline_reason, cached=catalog.names
            ) from None
        raise
    local = cached_quant_paths(catalog.repo, plan.quant.files) if plan.quant else None
    return PlannedModel(plan=plan, catalog=catalog, facts=facts, local_files=local, listing=lookup.listing)


def plan_local_file(
    path: Path,
    *,
    ctx_size: int | None,
    parallel: int,
    hardware_file: Path | None,
    workers: tuple[Worker, ...] = (),
    prefer: Preference = "quality",
    min_speed: float | None = None,
    longest: bool = False,
    cache_type: str = "f16",
    allow_disk: bool = False,
) -> PlannedModel:
    """A model already on disk, planned like a Hub quant: the memory check and the speed forecast."""
    from nemolaunch.adapters.gguf_files import inspect_model
    from nemolaunch.adapters.gguf_header import read_architecture, read_weight_facts
    from nemolaunch.core.catalog import Catalog, Quant, local_quant_name
    from nemolaunch.core.forecast import DEFAULT_CTX_SIZE
    from nemolaunch.core.planner import PlanRequest, plan_launch
    from nemolaunch.core.speed import Sparsity

    if parallel < 1:
        raise BadOption(option="--parallel", value=parallel, hint="use 1 or more slots")
    if ctx_size is not None and ctx_size <= 0:
        raise ContextSizeNotPositive(ctx_size=ctx_size)
    model_file = inspect_model(path)
    weights = read_weight_facts(model_file.shards)
    architecture = read_architecture(model_file.path)
    quant = Quant(
        name=local_quant_name(model_file.path.name),
        files=tuple(str(shard) for shard in model_file.shards),
        size_bytes=model_file.size_bytes,
        bits_per_weight=round(weights.bits_per_weight, 2) if weights.bits_per_weight else None,
    )
    catalog = Catalog(repo=str(model_file.path), source="local", quants=(quant,))
    expert_share = weights.expert_bytes / weights.weights_bytes if weights.weights_bytes else 0.0
    request = PlanRequest(
        quant=quant.name,  # the one there is: "asked for", so the quality floor does not hide it
        ctx_size=ctx_size if ctx_size is not None else _default_ctx(architecture, DEFAULT_CTX_SIZE),
        parallel=parallel,
        prefer=prefer,
        min_speed=min_speed,
        sparsity=Sparsity(weights.active_share, expert_share, "tensors"),
        max_context=longest,
        cache_type=cache_type,
        allow_disk=allow_disk,
    )
    facts, workers = machine(hardware_file, workers, measure_bandwidth=True, measure_disk=allow_disk)
    plan = plan_launch(facts, catalog, request, architecture, workers)
    return PlannedModel(plan=plan, catalog=catalog, facts=facts, local_files=model_file.shards)


def require_launchable(planned: PlannedModel, *, action: str) -> None:
    """Refuse, after showing why, a plan that neither fits nor was forced; ``action`` is what comes next."""
    plan = planned.plan
    if plan.launchable:
        if not plan.fits and plan.quant is not None:
            warn(f"{plan.quant.name} does not fit the forecast; going on to {action} it anyway")
        return
    render_plan_words(plan)
    raise nothing_fits(plan, action=action)


def nothing_fits(plan: Plan, *, action: str) -> NemolaunchError:
    """The error for a plan with nothing to ``action``: the named quant, or the smallest recommended one."""
    budget = f"{_gb(plan.budget.total_bytes)} {plan.budget.kind} budget"
    if plan.quant is not None:  # named (or forced) and does not fit
        hint = "pass --force to go on anyway" if action == "launch" else "see the ways out above"
        return QuantDoesNotFit(
            reference=f"{plan.model}:{plan.quant.name}", shortfall=_gb(plan.shortfall_bytes or 0), budget=budget,
            hint=hint,
        )  # fmt: skip
    smallest = next((item for item in plan.assessments if not item.quant.below_quality_floor), None)
    hint = {
        "launch": "see the ways out above, or name a quant with --quant (and --force to launch it anyway)",
        "download": "see the ways out above, or name the quant to download it anyway",
    }.get(action, "see the ways out above, or name a quant with --quant")
    return NothingFits(
        model=plan.model,
        smallest=smallest.quant.name if smallest else "every quant",
        shortfall=_gb(plan.shortfall_bytes or 0),
        budget=budget,
        hint=hint,
    )


def hardware_facts(
    hardware_file: Path | None, *, measure_bandwidth: bool = False, measure_disk: bool = False
) -> HardwareFacts:
    """The machine to plan for: the one in ``hardware_file``, else this one (probe warnings are shown)."""
    return hardware_facts_and_driver(hardware_file, measure_bandwidth=measure_bandwidth, measure_disk=measure_disk)[0]


def machine(
    hardware_file: Path | None,
    live_workers: tuple[Worker, ...] = (),
    *,
    measure_bandwidth: bool = False,
    measure_disk: bool = False,
) -> tuple[HardwareFacts, tuple[Worker, ...]]:
    """The machine to plan for and its RPC workers: live ones (``--rpc``), or those a cluster file records."""
    if hardware_file is None:
        facts = hardware_facts(None, measure_bandwidth=measure_bandwidth, measure_disk=measure_disk)
        return facts, live_workers
    from nemolaunch.adapters.hardware_file import load_machine

    facts, recorded = load_machine(hardware_file)
    if recorded and live_workers:
        raise BadOption(
            option="--rpc",
            value=",".join(str(worker.endpoint) for worker in live_workers),
            hint=f"--hardware {hardware_file} lists the workers already; give them once",
        )
    return facts, recorded or live_workers


def hardware_facts_and_driver(
    hardware_file: Path | None, *, measure_bandwidth: bool = False, measure_disk: bool = False
) -> tuple[HardwareFacts, str | None]:
    """As ``hardware_facts``, with this machine's NVIDIA driver version when it was probed."""
    if hardware_file is not None:
        from nemolaunch.adapters.hardware_file import load_hardware_facts

        return load_hardware_facts(hardware_file.expanduser()), None
    from nemolaunch.adapters.hardware_probe import probe_hardware

    probe = probe_hardware(measure_bandwidth=measure_bandwidth, measure_disk=measure_disk)
    for message in probe.warnings:
        warn(message)
    return probe.facts, probe.cuda_driver_version


def _architecture(catalog: Catalog, *, deadline_s: float) -> ArchitectureFacts | None:
    """The model's architecture, from the best source at hand (every quant shares it).

    A downloaded first shard; else the header of the smallest quant's first shard, read from the
    Hub without its weights (and cached); else built-in facts for the Ultra.
    """
    from nemolaunch.adapters.gguf_header import read_architecture
    from nemolaunch.core.forecast import builtin_architecture
    from nemolaunch.errors import NemolaunchError
    from nemolaunch.hub.listing import cached_quant_paths
    from nemolaunch.hub.remote_header import remote_architecture

    for quant in reversed(catalog.quants):
        cached = cached_quant_paths(catalog.repo, quant.files[:1])
        if cached:
            try:
                found = read_architecture(cached[0])
            except NemolaunchError:
                continue  # a damaged shard is the download's business; plan from what else is known
            if found is not None:
                return found
    if catalog.source == "hub" and catalog.quants:
        smallest = min(catalog.quants, key=lambda quant: quant.size_bytes)
        found = remote_architecture(
            catalog.repo, smallest.files[0], file_size=smallest.size_bytes, deadline_s=deadline_s
        )
        if found is not None:
            return found
    return builtin_architecture(catalog.repo)


def _default_ctx(architecture: ArchitectureFacts | None, default: int) -> int:
    return min(default, architecture.n_ctx_train) if architecture is not None else default


def _gb(size: int) -> str:
    from nemolaunch.core.download_plan import human_bytes

    return human_bytes(size)


def render_plan_table(plan: Plan) -> None:
    from rich.table import Table
    from rich.text import Text

    budget = plan.budget.total_bytes
    table = Table(
        title=f"{plan.model}\n{_context_words(plan)} · quants from {plan.source}",
        caption="➜ chosen   ↓ below UD-Q2_K_XL: used only when named",
    )
    table.add_column("", no_wrap=True)
    table.add_column("quant", no_wrap=True)
    table.add_column("bits", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("needs", justify="right", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    table.add_column("tok/s", justify="right", no_wrap=True)
    table.add_column("max ctx", justify="right", no_wrap=True)
    table.add_column(f"of {_gb(budget)}", no_wrap=True)
    paging = any(item.paged for item in plan.assessments)
    if paging:
        table.add_column("on disk", justify="right", no_wrap=True)
    chosen = plan.quant.name if plan.quant else None
    for item in plan.assessments:
        share = item.forecast.total / budget if budget else float("inf")
        width = 6
        filled = min(width, round(share * width)) if budget else width
        colour = "green" if item.fits else "red"
        marker = "➜" if item.quant.name == chosen else ("↓" if item.quant.below_quality_floor else "")
        bits = f"{item.quant.bits_per_weight:.2f}" if item.quant.bits_per_weight else "?"
        fits = Text("disk" if item.paged else "yes", style="yellow" if item.paged else "green") if item.fits else None
        row = [
            marker,
            item.quant.name,
            bits,
            _gb(item.quant.size_bytes),
            _gb(item.forecast.total),
            fits or Text("no", style=colour),
            _speed_cell(item),
            _ctx_cell(item.max_ctx),
            Text(f"{share:>5.0%} {'█' * filled}{'·' * (width - filled)}", style=colour),
        ]
        if paging:
            row.append(_gb(item.disk.disk_bytes) if item.paged and item.disk else "")
        table.add_row(*row)
    err_console.print(table)


def _context_words(plan: Plan) -> str:
    if plan.quant is not None and plan.compared_ctx != plan.ctx_size:
        # --ctx-size max: the table compares quants at the usual context; the chosen one gets more.
        return f"needs at {plan.compared_ctx} tokens; {plan.quant.name} runs with {plan.ctx_size} (--ctx-size max)"
    return f"{plan.ctx_size} tokens of context"


def _ctx_cell(tokens: int | None) -> str:
    if tokens is None:
        return "-"
    return f"{tokens / 2**20:g}M" if tokens >= 2**20 else f"{tokens // 1024}k"


def _speed_cell(item: QuantAssessment) -> str:
    rate = item.speed.generation_tps if item.speed else None
    if rate is None:
        return "?"
    return f"~{rate:.0f}" if rate >= 10 else f"~{rate:.1f}"


def render_hosts_table(plan: Plan) -> None:
    """With RPC workers: each machine's memory, and what of the chosen quant lands there."""
    if not plan.hosts or plan.quant is None:
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"{plan.quant.name} over {len(plan.hosts)} machines (approximate: llama.cpp splits by whole layers)"
    )
    table.add_column("machine", no_wrap=True)
    table.add_column("devices")
    table.add_column("free", justify="right", no_wrap=True)
    table.add_column("weights", justify="right", no_wrap=True)
    table.add_column("needs", justify="right", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    for host in plan.hosts:
        table.add_row(
            host.host,
            ", ".join(host.devices),
            _gb(host.free_bytes),
            _gb(host.weights_bytes),
            _gb(host.planned_bytes),
            Text("yes" if host.fits else "no", style="green" if host.fits else "red"),
        )
    err_console.print(table)


def render_plan_words(plan: Plan) -> None:
    for reason in plan.reasons:
        err_console.print(f"• {reason}", markup=False)
    if plan.speed_assumptions:
        err_console.print("• tokens/s are forecasts: " + "; ".join(plan.speed_assumptions), markup=False)
    for message in plan.warnings:
        warn(message)
    if plan.ways_out:
        err_console.print(styled(("Ways out:", "bold")))
        for way in plan.ways_out:
            err_console.print(f"  – {way.text}", markup=False)

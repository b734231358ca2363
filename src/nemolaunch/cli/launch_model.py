"""Which file `serve` and `run` hand to llama.cpp, and the checks that go with it.

A local GGUF is checked as it is; a Hub model is planned for this machine and downloaded (never
in a dry run); either way the memory forecast is held against the machine before launch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from nemolaunch.cli.output import note, warn
from nemolaunch.core.download_plan import human_bytes
from nemolaunch.core.launch import DEFAULT_CTX_SIZE, DEFAULT_PARALLEL, alias_for_repo, default_alias
from nemolaunch.errors import BadOption, ModelNotDownloaded
from nemolaunch.hub.deadline import DEFAULT_HUB_DEADLINE_S

if TYPE_CHECKING:
    # A type only: reading GGUF files waits until a model is really inspected (`--help` stays fast).
    from nemolaunch.adapters.gguf_files import ModelFile
    from nemolaunch.cli.context_options import ContextRequest
    from nemolaunch.core.budget import MemoryBudget
    from nemolaunch.core.cluster import Worker
    from nemolaunch.core.disk_paging import DiskPaging
    from nemolaunch.core.forecast import ArchitectureFacts, Forecast
    from nemolaunch.core.hardware import HardwareFacts
    from nemolaunch.core.planner import Preference


@dataclass(frozen=True)
class ModelRequest:
    """What `serve` and `run` were asked to launch, resolved in two steps.

    ``check_local`` first (a local file is as cheap to check as the port), ``resolve`` after the
    other cheap checks, so nobody waits for a 300 GB download to hear the port is taken.
    """

    model: str | None
    quant: str | None
    force: bool
    hardware: Path | None
    context: ContextRequest
    no_download: bool
    dry_run: bool
    parallel: int = DEFAULT_PARALLEL  # server slots the memory check counts
    workers: tuple[Worker, ...] = ()  # live RPC workers whose memory counts too
    prefer: Preference = "quality"  # how a Hub model's quant is chosen
    min_speed: float | None = None
    allow_disk: bool = False  # a model larger than memory may run with experts paged from disk
    hub_deadline_s: float = DEFAULT_HUB_DEADLINE_S  # the most one Hub answer may take

    def check_local(self) -> ResolvedModel | None:
        """The cheap checks, made before the binary is looked up: the user's own mistake is heard first.

        A local file is read (whole, GGUF, every shard) and ``--ctx-size`` held against it; for a Hub
        model, whose maximum comes with its plan, only a non-positive ``--ctx-size`` can be refused now.
        """
        if not is_local(self.model):
            context_size(self.context.ctx_size, None)
            return None
        resolved = self._resolve()
        context_size(self.context.ctx_size, resolved)
        return resolved

    def resolve(self, early: ResolvedModel | None) -> tuple[ResolvedModel, int]:
        """The model and the context size to launch it with, held against the machine's memory."""
        resolved = early or self._resolve()
        context = context_size(self.context.ctx_size, resolved)
        if resolved.user_file is not None:
            fit = check_local_fit(
                resolved.user_file,
                ctx_size=context,
                hardware=self.hardware,
                force=self.force,
                parallel=self.parallel,
                workers=self.workers,
                longest=self.context.longest,
                cache_type=self.context.cache_type,
                allow_disk=self.allow_disk,
            )
            resolved = replace(resolved, forecast_bytes=fit.forecast_bytes, disk_backed=fit.disk_backed)
        return resolved, context

    def _resolve(self) -> ResolvedModel:
        return resolve_model(
            self.model,
            quant=self.quant,
            force=self.force,
            hardware=self.hardware,
            context=self.context,
            no_download=self.no_download,
            dry_run=self.dry_run,
            parallel=self.parallel,
            workers=self.workers,
            prefer=self.prefer,
            min_speed=self.min_speed,
            allow_disk=self.allow_disk,
            hub_deadline_s=self.hub_deadline_s,
        )


def is_local(model: str | None) -> bool:
    """A local file is checked before anything else; a Hub model (planned, maybe downloaded) after."""
    from nemolaunch.cli.planning import read_model_spec

    return read_model_spec(model).local is not None


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # what llama.cpp is given: a file, or (a dry run of a Hub model) its path in the repo
    alias: str  # the default served name
    max_ctx: int | None  # the training context, when the header is at hand
    default_ctx: int  # --ctx-size when none is given
    # A file the user named: it gets the memory check here (a planned quant was checked by its plan).
    user_file: ModelFile | None = None
    # What the launch record keeps: the quant, where the plan puts it, the memory forecast.
    quant: str | None = None
    placement: str | None = None
    forecast_bytes: int | None = None
    disk_backed: bool = False  # runs with experts paged from disk (--allow-disk)


def resolve_model(
    model: str | None,
    *,
    quant: str | None,
    force: bool,
    hardware: Path | None,
    context: ContextRequest,
    no_download: bool,
    dry_run: bool,
    parallel: int = DEFAULT_PARALLEL,
    workers: tuple[Worker, ...] = (),
    prefer: Preference = "quality",
    min_speed: float | None = None,
    allow_disk: bool = False,
    hub_deadline_s: float = DEFAULT_HUB_DEADLINE_S,
) -> ResolvedModel:
    """A local file as given; a Hub model planned for this machine, downloaded unless --no-download.

    A dry run never downloads: it shows the command with the shard's path in the repository.
    """
    from nemolaunch.adapters.gguf_files import inspect_model
    from nemolaunch.cli.planning import plan_model, read_model_spec, require_launchable

    spec = read_model_spec(model)
    if spec.local is not None:
        if quant is not None:
            raise BadOption(option="--quant", value=quant, hint="it picks a quant of a Hub model, not of a local file")
        if prefer != "quality" or min_speed is not None:
            raise BadOption(
                option="--min-speed" if min_speed is not None else "--prefer",
                value=min_speed if min_speed is not None else prefer,
                hint="it picks a quant of a Hub model, not of a local file (`nemolaunch plan FILE` shows its speed)",
            )
        model_file = inspect_model(spec.local)
        if model_file.path != spec.local.expanduser():
            note(f"using the split model's first shard: {model_file.path}")
        return _local(model_file)
    assert spec.reference is not None
    planned = plan_model(
        spec.reference,
        quant=quant,
        ctx_size=context.ctx_size,
        longest=context.longest,
        cache_type=context.cache_type,
        force=force,
        parallel=parallel,
        hardware_file=hardware,
        workers=workers,
        prefer=prefer,
        min_speed=min_speed,
        allow_disk=allow_disk,
        hub_deadline_s=hub_deadline_s,
    )
    require_launchable(planned, action="launch")
    chosen = planned.plan.quant
    assert chosen is not None
    reference = f"{planned.catalog.repo}:{chosen.name}"
    note(f"plan: {reference} ({planned.plan.placement}), {human_bytes(chosen.size_bytes)} of files")
    alias = alias_for_repo(planned.catalog.repo)
    chosen_assessment = planned.plan.chosen
    recorded = {
        "quant": chosen.name, "placement": planned.plan.placement,
        "forecast_bytes": chosen_assessment.forecast.total if chosen_assessment else None,
    }  # fmt: skip
    if planned.local_files is not None:
        first = planned.local_files[0]
    elif no_download:
        raise ModelNotDownloaded(reference=reference)
    elif dry_run:
        note(f"{reference} is not downloaded yet: without --dry-run it is fetched first")
        return ResolvedModel(
            Path(chosen.files[0]),
            alias,
            max_ctx=None,
            default_ctx=planned.plan.ctx_size,
            disk_backed=planned.plan.paged,
            **recorded,
        )
    else:
        from nemolaunch.cli.download import download_planned

        result = download_planned(
            planned,
            local_dir=None,
            workers=4,
            stall_timeout=60.0,
            verify=False,
            xet=False,
            quiet=False,
            hub_deadline_s=hub_deadline_s,
        )
        first = result.files[chosen.files[0]]
    resolved = _local(inspect_model(first))
    return ResolvedModel(
        resolved.path, alias, resolved.max_ctx, resolved.default_ctx, disk_backed=planned.plan.paged, **recorded
    )


def _local(model_file: ModelFile) -> ResolvedModel:
    from nemolaunch.core.catalog import quant_tag

    maximum = model_file.context_length
    return ResolvedModel(
        path=model_file.path,
        alias=default_alias(model_file.path, general_name=model_file.general_name),
        max_ctx=maximum,
        default_ctx=min(DEFAULT_CTX_SIZE, maximum) if maximum else DEFAULT_CTX_SIZE,
        user_file=model_file,
        quant=quant_tag(model_file.path.name),
    )


class LocalFit(NamedTuple):
    """What the memory check of a local file settles for its launch."""

    ctx_size: int
    forecast_bytes: int
    disk_backed: bool  # larger than memory: its experts are paged from disk (--allow-disk)


def check_local_fit(
    model_file: ModelFile,
    *,
    ctx_size: int,
    hardware: Path | None,
    force: bool,
    parallel: int = DEFAULT_PARALLEL,
    workers: tuple[Worker, ...] = (),
    longest: bool = False,
    cache_type: str = "f16",
    allow_disk: bool = False,
) -> LocalFit:
    """A local file gets the same memory check as a planned quant; --force launches it anyway, and
    with ``allow_disk`` one larger than memory runs with its experts paged from disk.

    Returns the context to launch with (``ctx_size``, or with ``longest`` the longest that fits), the
    memory forecast at that context, and whether the launch is disk-backed.
    """
    from nemolaunch.adapters.gguf_header import read_architecture
    from nemolaunch.cli.planning import machine
    from nemolaunch.core.budget import memory_budget
    from nemolaunch.core.forecast import forecast_memory
    from nemolaunch.errors import NemolaunchError, QuantDoesNotFit

    facts, workers = machine(hardware, workers, measure_disk=allow_disk, measure_bandwidth=allow_disk)
    budget = memory_budget(facts, workers)
    try:
        architecture = read_architecture(model_file.path)
    except NemolaunchError:
        architecture = None
    if longest:
        from nemolaunch.core.assessment import PlanRequest, max_context
        from nemolaunch.core.catalog import Quant

        quant = Quant(model_file.path.name, (), model_file.size_bytes, None)
        request = PlanRequest(parallel=parallel, cache_type=cache_type)
        ctx_size = max_context(quant, budget, architecture, request) or ctx_size
        note(f"--ctx-size max: {ctx_size} tokens fit beside {model_file.path.name}")
    forecast = forecast_memory(
        model_file.size_bytes,
        architecture,
        ctx_size=ctx_size,
        parallel=parallel,
        gpu_devices=budget.gpu_devices,
        cuda_devices=budget.cuda_devices,
        rpc_devices=budget.rpc_devices,
        rpc_workers=len(budget.workers),
        cache_type=cache_type,
    )
    if forecast.total <= budget.total_bytes:
        return LocalFit(ctx_size, forecast.total, disk_backed=False)
    if allow_disk:
        paging = _disk_paging(model_file, forecast, budget, facts, architecture)
        if paging is not None:
            rate = paging.speed.generation_tps
            note(
                f"{model_file.path.name} does not fit in memory: {human_bytes(paging.disk_bytes)} of its experts are "
                f"paged from disk ({paging.placement}, ~{rate or 0:.1f} tokens/s forecast, approximate)"
            )
            return LocalFit(ctx_size, forecast.total, disk_backed=True)
    shortfall = human_bytes(forecast.total - budget.total_bytes)
    where = f"{human_bytes(budget.total_bytes)} {budget.kind} budget"
    if force:
        warn(f"{model_file.path.name} needs {shortfall} more than this machine's {where}; launching anyway (--force)")
        return LocalFit(ctx_size, forecast.total, disk_backed=False)
    raise QuantDoesNotFit(
        reference=str(model_file.path), shortfall=shortfall, budget=where, hint="pass --force to launch it anyway"
    )


def _disk_paging(
    model_file: ModelFile,
    forecast: Forecast,
    budget: MemoryBudget,
    facts: HardwareFacts,
    architecture: ArchitectureFacts | None,
) -> DiskPaging | None:
    """How a local file larger than memory would run with its experts paged from disk (None: it cannot)."""
    from nemolaunch.adapters.gguf_header import read_weight_facts
    from nemolaunch.core.disk_paging import expert_slice_bytes, page_from_disk
    from nemolaunch.core.speed import Sparsity

    weights = read_weight_facts(model_file.shards)
    expert_share = weights.expert_bytes / weights.weights_bytes if weights.weights_bytes else 0.0
    sparsity = Sparsity(weights.active_share, expert_share, "tensors")
    return page_from_disk(
        weights_bytes=model_file.size_bytes, forecast=forecast, budget=budget, facts=facts, sparsity=sparsity,
        bits_per_weight=weights.bits_per_weight, layers=architecture.n_layer if architecture else 0,
        slice_bytes=expert_slice_bytes(model_file.size_bytes, sparsity, architecture),
    )  # fmt: skip


def context_size(requested: int | None, resolved: ResolvedModel | None) -> int:
    """``--ctx-size``, checked as the planner checks it; never 0 (llama.cpp's "the training context").

    Without ``resolved`` (a Hub model not planned yet) only the sign can be checked.
    """
    from nemolaunch.errors import ContextSizeNotPositive, ContextSizeTooLarge

    if requested is None:
        return resolved.default_ctx if resolved is not None else DEFAULT_CTX_SIZE
    if requested <= 0:
        raise ContextSizeNotPositive(ctx_size=requested)
    if resolved is not None and resolved.max_ctx and requested > resolved.max_ctx:
        raise ContextSizeTooLarge(ctx_size=requested, maximum=resolved.max_ctx)
    return requested

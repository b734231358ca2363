"""`nemolaunch plan`: which quant this machine should run, how it is placed, and why."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.cluster import RpcOption, read_endpoints, workers_for_plan
from nemolaunch.cli.context_options import CacheTypeOption, CtxOption, read_context
from nemolaunch.cli.llama_binary import warn_if_gpus_go_unused
from nemolaunch.cli.output import err_console, print_command, print_json, styled
from nemolaunch.core.launch import DEFAULT_PARALLEL

if TYPE_CHECKING:
    from nemolaunch.adapters.llamacpp import Found
    from nemolaunch.cli.planning import PlannedModel
    from nemolaunch.core.planner import Preference

HardwareOption = Annotated[
    Path | None,
    typer.Option("--hardware", help="Plan for the machine in this JSON file (see `doctor --json`)."),
]
QuantOption = Annotated[str | None, typer.Option("--quant", "-q", help="Use this quant, whatever the plan says.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Launch even when the forecast says it does not fit.")]
PreferOption = Annotated[
    str | None,
    typer.Option(
        "--prefer",
        help="quality: the best quant that fits; speed: the fastest at or above UD-Q2_K_XL (forecast tokens/s) "
        "[default: quality].",
    ),
]
MinSpeedOption = Annotated[
    float | None,
    typer.Option("--min-speed", help="The best quality whose forecast reaches this many generated tokens/s."),
]
AllowDiskOption = Annotated[
    bool,
    typer.Option(
        "--allow-disk",
        help="When nothing fits in memory, run the smallest recommended quant with the experts that do not fit "
        "paged from disk (slow: see the forecast) [or allow_disk in config.toml, NEMOLAUNCH_ALLOW_DISK].",
    ),
]
ParallelOption = Annotated[
    int | None,
    typer.Option(
        "--parallel", help="Server slots the forecast counts; each keeps its own Mamba state (llama-server picks 4)."
    ),
]


def plan_command(
    model: Annotated[
        str | None,
        typer.Argument(
            help="REPO[:QUANT] on the Hub, or a local .gguf (any shard) [default: the Nemotron 3 Ultra GGUF repo]."
        ),
    ] = None,
    ctx_size: CtxOption = None,
    cache_type: CacheTypeOption = None,
    quant: QuantOption = None,
    force: ForceOption = False,
    parallel: ParallelOption = None,
    hardware: HardwareOption = None,
    rpc: RpcOption = None,
    prefer: PreferOption = None,
    min_speed: MinSpeedOption = None,
    allow_disk: AllowDiskOption = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object on stdout.")] = False,
) -> None:
    """Show every quant of the model against this machine's memory, the one to run, and the command."""
    from nemolaunch.cli.planning import (
        nothing_fits,
        plan_local_file,
        plan_model,
        read_model_spec,
        render_hosts_table,
        render_plan_table,
        render_plan_words,
    )
    from nemolaunch.cli.settings import llama_cpp_dir, load_settings
    from nemolaunch.errors import BadOption

    settings = load_settings(
        model=model,
        ctx_size=ctx_size,
        cache_type=cache_type,
        quant=quant,
        parallel=parallel,
        prefer=prefer,
        allow_disk=flag(allow_disk),
    )
    s, llama_cpp = settings.values, llama_cpp_dir(settings)
    quant, parallel = s.quant, s.parallel or DEFAULT_PARALLEL
    preference = check_preference(s.prefer, min_speed)
    context = read_context(s.ctx_size, s.cache_type)
    spec = read_model_spec(s.model)
    if spec.local is not None and quant is not None:
        raise BadOption(option="--quant", value=quant, hint="it picks a quant of a Hub model, not of a local file")
    workers = workers_for_plan(read_endpoints(rpc), llama_cpp=llama_cpp)
    if spec.local is not None:
        planned = plan_local_file(
            spec.local, ctx_size=context.ctx_size, parallel=parallel, hardware_file=hardware, workers=workers,
            prefer=preference, min_speed=min_speed, longest=context.longest, cache_type=context.cache_type,
            allow_disk=s.allow_disk,
        )  # fmt: skip
    else:
        assert spec.reference is not None
        planned = plan_model(
            spec.reference, quant=quant, ctx_size=context.ctx_size, force=force, parallel=parallel,
            hardware_file=hardware, workers=workers, prefer=preference, min_speed=min_speed, measure_bandwidth=True,
            longest=context.longest, cache_type=context.cache_type, allow_disk=s.allow_disk,
            hub_deadline_s=s.hub_deadline,
        )  # fmt: skip
    plan = planned.plan
    argv = None
    if plan.quant is not None:
        found = _this_machines_server(llama_cpp) if hardware is None else None
        if found is not None:
            # Before hours of downloading, not after: the build found here would leave the GPUs idle.
            warn_if_gpus_go_unused(found)
        # For another machine (--hardware), or before any build, the plain name says what would run.
        argv = planned_server_argv(planned, parallel=parallel, binary=str(found.path) if found else "llama-server")
    if json_output:
        print_json({**plan.to_json(), "command": argv, "local": planned.local_files is not None})
    else:
        render_plan_table(plan)
        render_hosts_table(plan)
        render_plan_words(plan)
        if argv is not None:
            where = "" if planned.local_files else "  (after `nemolaunch download`)"
            err_console.print(styled(("Command:", "bold"), where))
            print_command(argv)
    if not plan.launchable:
        raise nothing_fits(plan, action="plan")


def planned_server_argv(planned: PlannedModel, *, parallel: int, binary: str) -> list[str]:
    """The llama-server command the plan would run: the downloaded first shard, or its path in the repo."""
    from nemolaunch.cli.cluster import launch_cluster
    from nemolaunch.core.launch import ServerLaunch, alias_for_repo, default_alias, server_argv

    plan = planned.plan
    assert plan.quant is not None
    model = planned.local_files[0] if planned.local_files else Path(plan.quant.files[0])
    alias = default_alias(model) if planned.catalog.source == "local" else alias_for_repo(planned.catalog.repo)
    extra = ("--parallel", str(parallel)) if parallel != DEFAULT_PARALLEL else ()
    launch = ServerLaunch(
        binary=binary,
        model=model,
        ctx_size=plan.ctx_size,
        alias=alias,
        cluster=launch_cluster(plan.budget.workers),
        cache_type=plan.cache_type,
        disk_backed=plan.paged,
        extra_args=extra,
    )
    return server_argv(launch)


def flag(value: bool) -> bool | None:
    """A Typer on/off flag as a setting: given (True), or not given (None: the environment or file decide)."""
    return True if value else None


def check_preference(prefer: str | None, min_speed: float | None) -> Preference:
    """``--min-speed`` (not a setting: it is asked for per launch), and how it goes with ``--prefer``,
    whose value the settings model already checked."""
    from nemolaunch.errors import BadOption

    if min_speed is not None and not (min_speed > 0 and min_speed != float("inf")):
        raise BadOption(option="--min-speed", value=min_speed, hint="use a positive number of tokens/s")
    if min_speed is not None and prefer == "speed":
        raise BadOption(
            option="--prefer", value="speed with --min-speed", hint="--min-speed already chooses by speed; use one"
        )
    return "speed" if prefer == "speed" else "quality"


def _this_machines_server(llama_cpp: Path | None) -> Found | None:
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.errors import NemolaunchError

    with contextlib.suppress(NemolaunchError):
        return find_binary("llama-server", explicit_dir=llama_cpp)
    return None

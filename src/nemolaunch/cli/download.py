"""`nemolaunch download`: fetch exactly one quant's shards into the shared HF cache (or --local-dir)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.cluster import RpcOption, read_endpoints, workers_for_plan
from nemolaunch.cli.context_options import CacheTypeOption, CtxOption, read_context
from nemolaunch.cli.output import err_console, note, print_json, real_console, warn
from nemolaunch.cli.plan import (
    AllowDiskOption,
    HardwareOption,
    MinSpeedOption,
    PreferOption,
    QuantOption,
    check_preference,
    flag,
)
from nemolaunch.core.download_plan import human_bytes
from nemolaunch.core.launch import DEFAULT_PARALLEL
from nemolaunch.hub.deadline import DEFAULT_HUB_DEADLINE_S

if TYPE_CHECKING:
    from rich.progress import Progress

    from nemolaunch.cli.planning import PlannedModel
    from nemolaunch.core.download_plan import DownloadEvent
    from nemolaunch.hub.download import DownloadResult

LocalDirOption = Annotated[
    Path | None,
    typer.Option("--local-dir", help="Download into this folder (the layout of `hf download --local-dir`)."),
]
StallOption = Annotated[
    float, typer.Option("--stall-timeout", help="Seconds without a byte before a shard is retried.")
]


def download_command(
    model: Annotated[
        str | None, typer.Argument(help="REPO[:QUANT] [default: the Nemotron 3 Ultra and the planned quant].")
    ] = None,
    quant: QuantOption = None,
    prefer: PreferOption = None,
    min_speed: MinSpeedOption = None,
    allow_disk: AllowDiskOption = False,
    local_dir: LocalDirOption = None,
    hardware: HardwareOption = None,
    rpc: RpcOption = None,
    ctx_size: CtxOption = None,
    cache_type: CacheTypeOption = None,
    workers: Annotated[int, typer.Option("--workers", help="Shards fetched at once.")] = 4,
    connections: Annotated[
        int,
        typer.Option(
            "--connections",
            help="Most HTTP connections at once, all shards together (in 32-64 MiB ranges): "
            "4 at first, doubled while that raises the speed.",
        ),
    ] = 32,
    stall_timeout: StallOption = 60.0,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash every shard, even ones verified before.")] = False,
    xet: Annotated[
        bool, typer.Option("--xet", help="Use the Xet transfer where offered (faster; not resumable after a kill).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors and the result.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the downloaded files as JSON.")] = False,
) -> None:
    """Download a quant's GGUF shards, resumably, verified against their sha256."""
    from nemolaunch.cli.planning import plan_model, read_model_spec, require_launchable
    from nemolaunch.cli.settings import llama_cpp_dir, load_settings
    from nemolaunch.errors import BadOption

    settings = load_settings(
        model=model, quant=quant, prefer=prefer, ctx_size=ctx_size, cache_type=cache_type, allow_disk=flag(allow_disk)
    )
    s = settings.values
    model, quant = s.model, s.quant
    if not 1 <= connections <= 64:  # past 64 a CDN sees a flood, not a download
        raise BadOption(option="--connections", value=connections, hint="use 1 to 64")
    spec = read_model_spec(model)
    if spec.reference is None:
        raise BadOption(option="MODEL", value=model, hint="download takes a Hub repository (owner/name[:QUANT])")
    if local_dir is not None:
        _check_local_dir(local_dir)
    named = spec.reference.quant or quant
    preference = check_preference(s.prefer, min_speed)
    context = read_context(s.ctx_size, s.cache_type)
    endpoints = read_endpoints(rpc)
    planned = plan_model(
        spec.reference,
        quant=quant,
        ctx_size=context.ctx_size,
        longest=context.longest,
        cache_type=context.cache_type,
        force=named is not None,  # a quant the user names is fetched even if the forecast says no
        parallel=DEFAULT_PARALLEL,
        hardware_file=hardware,
        # The quant to fetch is the one the cluster holds.
        workers=workers_for_plan(endpoints, llama_cpp=llama_cpp_dir(settings)),
        prefer=preference,
        min_speed=min_speed,
        allow_disk=s.allow_disk,
        hub_deadline_s=s.hub_deadline,
    )
    require_launchable(planned, action="download")
    result = download_planned(
        planned,
        local_dir=local_dir,
        workers=workers,
        stall_timeout=stall_timeout,
        verify=verify,
        xet=xet,
        quiet=quiet or json_output,
        connections=connections,
        hub_deadline_s=s.hub_deadline,
    )
    if json_output:
        print_json(
            {
                "model": planned.catalog.repo,
                "quant": planned.plan.quant.name if planned.plan.quant else None,
                "commit": result.commit,
                "files": {name: str(path) for name, path in result.files.items()},
                "fetched_bytes": result.fetched_bytes,
                "offline": result.offline,
            }
        )
    else:
        first = next(iter(result.files.values()))
        sys.stdout.write(f"{first}\n")


def download_planned(
    planned: PlannedModel,
    *,
    local_dir: Path | None,
    workers: int,
    stall_timeout: float,
    verify: bool,
    xet: bool,
    quiet: bool,
    connections: int = 32,  # the adapter's DEFAULT_CONNECTIONS, not imported here to keep --help fast
    hub_deadline_s: float = DEFAULT_HUB_DEADLINE_S,
) -> DownloadResult:
    """Fetch the plan's quant (what `serve` and `run` also call when the files are not local)."""
    from nemolaunch.errors import BadOption, HubListingChanged, HubUnreachable
    from nemolaunch.hub.download import download_quant
    from nemolaunch.hub.listing import fetch_listing, hub_offline

    quant = planned.plan.quant
    assert quant is not None
    if workers < 1:
        raise BadOption(option="--workers", value=workers, hint="use 1 or more")
    if not stall_timeout > 0 or stall_timeout == float("inf"):
        raise BadOption(option="--stall-timeout", value=stall_timeout, hint="use a positive number of seconds")

    offline_reason = "HF_HUB_OFFLINE is set" if hub_offline(os.environ) else None
    listing = planned.listing  # the plan's own listing: the Hub is asked once a run
    if offline_reason is None and listing is None:
        try:
            listing = fetch_listing(repo_id=planned.catalog.repo, deadline_s=hub_deadline_s)
        except HubUnreachable as exc:
            offline_reason = f"the Hub is unreachable ({exc.data['reason']})"
    if listing is None:
        return _from_cache(planned, reason=offline_reason or "offline", quiet=quiet, local_dir=local_dir)
    missing = [path for path in quant.files if listing.find(path) is None]
    if missing:
        raise HubListingChanged(repo_id=planned.catalog.repo, path=missing[0], expected="a file", listed="none")
    files = [listing.find(path) for path in quant.files]
    renderer = _ProgressRenderer(quiet=quiet, label=f"{planned.catalog.repo}:{quant.name}")
    with renderer:
        result = download_quant(
            repo_id=planned.catalog.repo,
            files=files,
            local_dir=local_dir,
            max_workers=workers,
            stall_timeout_s=stall_timeout,
            progress=renderer.on_event,
            verify=verify,
            prefer_xet=xet,
            listing=listing,
            connections=connections,
        )
    if not quiet:
        note(f"{quant.name}: {len(result.files)} file(s) ready, {human_bytes(result.fetched_bytes)} fetched this run")
    return result


def _check_local_dir(local_dir: Path) -> None:
    from nemolaunch.errors import BadOption

    for folder in (local_dir, *local_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise BadOption(option="--local-dir", value=str(local_dir), hint=f"{folder} is a file, not a folder")
            return


def _from_cache(planned: PlannedModel, *, reason: str, quiet: bool, local_dir: Path | None) -> DownloadResult:
    """No Hub to ask: use the quant if every shard is already where it would go, else say what is missing."""
    from nemolaunch.errors import FilesMissingOffline
    from nemolaunch.hub.download import DownloadResult
    from nemolaunch.hub.listing import cached_quant_paths

    quant = planned.plan.quant
    assert quant is not None
    if local_dir is not None:
        found: tuple[Path, ...] | None = tuple(local_dir / path for path in quant.files)
        missing = [path for path, file in zip(quant.files, found, strict=True) if not file.is_file()]
        target = str(local_dir)
    else:
        found = planned.local_files
        missing = [path for path in quant.files if cached_quant_paths(planned.catalog.repo, [path]) is None]
        target = "the HF cache"
    if missing:
        if planned.catalog.source == "builtin":
            missing = [f"{path} (name from built-in figures)" for path in missing]
        raise FilesMissingOffline(repo_id=planned.catalog.repo, reason=reason, missing=missing, target=target)
    assert found is not None
    if not quiet:
        warn(f"{reason}: using the {len(found)} file(s) of {quant.name} in {target} as they are")
    return DownloadResult(commit=None, files=dict(zip(quant.files, found, strict=True)), fetched_bytes=0, offline=True)


class _ProgressRenderer:
    """Turns download events into one bar for the whole quant (bytes, speed, ETA) and a line per shard.

    On a terminal: rich bars. Elsewhere (a log, CI): one plain line per finished shard.
    """

    def __init__(self, *, quiet: bool, label: str) -> None:
        self.quiet = quiet
        self.label = label
        # rich's bars (and their import, ~20 ms) only where they are drawn: not quiet, on a terminal (asked
        # in that order, as asking makes rich's console).
        self.progress = _bars() if not quiet and err_console.is_terminal else None
        self.total_task: int | None = None
        self.file_tasks: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def __enter__(self) -> _ProgressRenderer:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)

    def on_event(self, event: DownloadEvent) -> None:
        from nemolaunch.core import download_plan as ev

        if self.quiet:
            return
        if isinstance(event, ev.DownloadPlanned):
            self.done = {planned.path: planned.on_disk for planned in event.files}
            self.sizes = {planned.path: planned.size for planned in event.files}
            if self.progress is not None:
                self.total_task = self.progress.add_task(
                    self.label, total=event.total_bytes, completed=event.on_disk_bytes
                )
                for planned in event.files:
                    self.file_tasks[planned.path] = self.progress.add_task(
                        f"  {Path(planned.path).name}", total=planned.size, completed=planned.on_disk
                    )
            else:
                note(
                    f"downloading {self.label}: {len(event.files)} file(s), {human_bytes(event.total_bytes)} "
                    f"into {event.target} ({human_bytes(event.on_disk_bytes)} already there)"
                )
        elif isinstance(event, ev.FileProgress):
            self._advance(event.path, event.done)
        elif isinstance(event, ev.FileStarted):
            self._advance(event.path, event.resume_from)
            if event.resume_from:
                self._say(f"resuming {event.path} from {human_bytes(event.resume_from)}")
        elif isinstance(event, ev.FileRetrying):
            self._say(
                f"retrying {event.path} (attempt {event.attempt}, {event.reason}) "
                f"from {human_bytes(event.resume_from)} in {event.wait_s:.0f}s"
            )
        elif isinstance(event, ev.XetFallback):
            warn(f"Xet transfer failed for {event.path} ({event.reason}): falling back to plain HTTP")
        elif isinstance(event, ev.ChecksumRefetch):
            warn(f"{event.path} failed its sha256 check: deleted, fetching it again")
        elif isinstance(event, ev.OrphansRemoved):
            self._say(f"removed {len(event.paths)} abandoned partial file(s), {human_bytes(event.nbytes)}")
        elif isinstance(event, ev.WaitingForLock):
            self._say(f"waiting for another download of {event.path} to finish")
        elif isinstance(event, ev.UsingCache):
            warn(f"using only what is on disk: {event.reason}")
        elif isinstance(event, ev.FileReady):
            self._advance(event.path, None)
            if self.progress is None:
                note(f"ready: {event.path}")

    def _advance(self, path: str, done: int | None) -> None:
        if path not in self.sizes:
            return
        done = self.sizes[path] if done is None else done
        self.done[path] = done
        if self.progress is not None:
            self.progress.update(self.file_tasks[path], completed=done)
            if self.total_task is not None:
                self.progress.update(self.total_task, completed=sum(self.done.values()))

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, markup=False)
        else:
            note(message)


def _bars() -> Progress:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=real_console(err_console),
    )

"""`nemolaunch stop`: stop launches by port, alias or pid (or all of them), and only launches.

A pid with no live record is refused, whatever runs under it: stop signals only processes nemolaunch
exec'd, checked by their start time, so a pid reused by another program is never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.output import console, err_console, note, styled, warn

if TYPE_CHECKING:
    from nemolaunch.adapters.launch_records import Launch
    from nemolaunch.core.launch_record import LaunchRecord

#: How long a server gets after Ctrl-C (SIGINT) to finish what it does and exit, before SIGTERM.
DEFAULT_GRACE_S = 10.0


def stop_command(
    target: Annotated[
        str | None, typer.Argument(help="The launch's port, alias or pid (`nemolaunch ps` lists them).")
    ] = None,
    all_launches: Annotated[bool, typer.Option("--all", help="Stop every launch `nemolaunch ps` lists.")] = False,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds after SIGINT before SIGTERM.", show_default=True)
    ] = DEFAULT_GRACE_S,
) -> None:
    """Stop servers and workers nemolaunch launched: SIGINT, then SIGTERM after a grace period."""
    from nemolaunch.adapters.launch_records import live_launches, remove_record
    from nemolaunch.adapters.process_stop import ignores_sigint, stop_launches
    from nemolaunch.errors import BadOption

    if grace < 0:
        raise BadOption(option="--grace", value=grace, hint="use 0 or more seconds")
    if target is not None and all_launches:
        raise BadOption(option="--all", value=f"with {target}", hint="name one launch, or pass --all alone")
    launches = live_launches()
    if not launches and target is None:
        note("nothing nemolaunch launched is running")
        return
    chosen = [launch.record for launch in launches] if all_launches else [choose_launch(launches, target, "stop")]

    def escalate(record: LaunchRecord, signal_name: str) -> None:
        from nemolaunch.core.launch_record import describe_launch

        warn(f"{describe_launch(record)} is still running after its grace period: sending {signal_name}")

    for record in chosen:
        how = "SIGTERM: it ignores SIGINT" if ignores_sigint(record.pid) else f"SIGINT; SIGTERM after {grace:g} s"
        err_console.print(f"stopping {_describe(record)} ({how})", markup=False)
    for stopped in stop_launches(chosen, grace_s=grace, on_escalate=escalate):
        if stopped.running:
            warn(f"{_describe(stopped.record)} survived {', '.join(stopped.signals)}: it is stuck in the kernel")
            continue
        remove_record(stopped.record.pid)
        how = ", ".join(stopped.signals) or "it had exited"
        console.print(styled(("stopped ", "bold"), f"{_describe(stopped.record)} in {stopped.seconds:.1f} s ({how})"))


def _describe(record: LaunchRecord) -> str:
    from nemolaunch.core.launch_record import describe_launch

    return describe_launch(record)


def choose_launch(launches: list[Launch], target: str | None, verb: str) -> LaunchRecord:
    """The one launch ``target`` names; refuses none, several, and a pid that is not a launch."""
    from nemolaunch.adapters.launch_records import process_facts
    from nemolaunch.core.launch_record import find_targets
    from nemolaunch.errors import AmbiguousLaunch, LaunchNotNamed, NoSuchLaunch, NotALaunch, NothingLaunched

    records = [launch.record for launch in launches]
    running = [_describe(record) for record in records]
    if target is None and not records:
        raise NothingLaunched(verb=verb)
    if target is None:
        if len(records) == 1 and verb == "show the log of":
            return records[0]  # one server: `nemolaunch logs` means it
        raise LaunchNotNamed(verb=verb, running=running)
    matches = find_targets(records, target)
    if len(matches) > 1:
        raise AmbiguousLaunch(target=target, matches=[_describe(record) for record in matches])
    if matches:
        return matches[0]
    if target.isdigit():
        facts = process_facts(int(target))
        if facts is not None and not facts.zombie:
            from pathlib import Path

            program = Path(facts.cmdline[0]).name if facts.cmdline else "unknown"
            raise NotALaunch(pid=int(target), program=program)
    raise NoSuchLaunch(target=target, running=running)

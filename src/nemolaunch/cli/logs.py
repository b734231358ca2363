"""`nemolaunch logs`: the log of a server started with `serve --log-file` (or a log_dir), and with -f what
it writes next, until the server exits or Ctrl-C."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated

import typer

#: How often -f looks for new lines: a person reading a log cannot tell 0.3 s from immediately.
FOLLOW_POLL_S = 0.3


def logs_command(
    target: Annotated[
        str | None, typer.Argument(help="The server's port, alias or pid [default: the one running server].")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what the server logs.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines from the end to show first (0: all).")] = 50,
) -> None:
    """Show the log of a server nemolaunch launched with --log-file or log_dir (-f follows it)."""
    from nemolaunch.adapters.launch_records import live_launches
    from nemolaunch.cli.stop import choose_launch
    from nemolaunch.core.launch_record import describe_launch, liveness
    from nemolaunch.errors import BadOption, NoLogFile

    if lines < 0:
        raise BadOption(option="--lines", value=lines, hint="use 0 (the whole log) or more")
    logged = [launch for launch in live_launches() if launch.record.kind == "server"]
    record = choose_launch(logged, target, "show the log of")
    if record.log_file is None:
        raise NoLogFile(launch=describe_launch(record))
    path = Path(record.log_file)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BadOption(option="log file", value=str(path), hint=f"it cannot be read ({exc.strerror})") from exc
    with handle:
        tail = deque(handle, maxlen=lines or None)
        out = sys.stdout.buffer
        out.writelines(tail)
        out.flush()
        if not follow:
            return
        from nemolaunch.adapters.launch_records import process_facts

        try:
            while True:
                chunk = handle.read()
                if chunk:
                    out.write(chunk)
                    out.flush()
                elif liveness(record, process_facts(record.pid)) == "stale":
                    out.write(handle.read())  # what it wrote while exiting
                    out.flush()
                    print(f"[{describe_launch(record)} has exited]", file=sys.stderr)
                    return
                else:
                    time.sleep(FOLLOW_POLL_S)
        except KeyboardInterrupt:
            return  # Ctrl-C is how one leaves -f: nothing to report

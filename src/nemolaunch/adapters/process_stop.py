"""Stopping launched processes as a person would: Ctrl-C (SIGINT) first, SIGTERM after a grace period,
SIGKILL only when both were ignored. Every signal goes to the process the record names, checked again
just before it is sent, so a pid that was reused meanwhile is never signalled."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nemolaunch.adapters.launch_records import process_facts
from nemolaunch.core.launch_record import LaunchRecord, liveness

#: After SIGTERM too was ignored, how long before SIGKILL.
TERM_GRACE_S = 5.0
_POLL_S = 0.1


@dataclass(frozen=True)
class Stopped:
    record: LaunchRecord
    signals: tuple[str, ...]  # what it took: ("SIGINT",), ("SIGINT", "SIGTERM"), ...
    seconds: float
    running: bool = False  # still there after SIGKILL (a process stuck in the kernel)


def _still_ours(record: LaunchRecord) -> bool:
    return liveness(record, process_facts(record.pid)) != "stale"


def _send(record: LaunchRecord, sig: signal.Signals) -> bool:
    """Signal the record's process if it is still that process; False when it is gone."""
    if not _still_ours(record):
        return False
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True


def ignores_sigint(pid: int) -> bool:
    """Does the process ignore SIGINT? One started in the background (``&``, nohup) by a shell does, and an
    ignored signal stays ignored across the exec: Ctrl-C's signal would only cost it the grace period.
    Linux says so in /proc; elsewhere it is not known, and SIGINT is tried."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def _wait_gone(records: Sequence[LaunchRecord], timeout: float) -> list[LaunchRecord]:
    """Wait up to ``timeout`` for the processes to end; those still running."""
    deadline = time.monotonic() + timeout
    running = list(records)
    while running:
        running = [record for record in running if _still_ours(record)]
        if not running or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    return running


def stop_launches(
    records: Sequence[LaunchRecord], *, grace_s: float, on_escalate: Callable[[LaunchRecord, str], None]
) -> list[Stopped]:
    """Stop every record's process, all at once (a cluster's workers need not wait for each other)."""
    started = time.monotonic()
    sent: dict[int, list[str]] = {record.pid: [] for record in records}
    steps = ((signal.SIGINT, grace_s), (signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, TERM_GRACE_S))
    # The step each process starts at: one that ignores SIGINT gets SIGTERM first.
    first = {record.pid: 1 if ignores_sigint(record.pid) else 0 for record in records}
    running = list(records)
    for number, (sig, wait_s) in enumerate(steps):
        due = [record for record in running if first[record.pid] <= number]
        if not due:
            continue
        for record in due:
            if number > first[record.pid]:
                on_escalate(record, sig.name)
            if _send(record, sig):
                sent[record.pid].append(sig.name)
        still = {record.pid for record in _wait_gone(due, wait_s)}
        running = [record for record in running if record.pid in still or first[record.pid] > number]
        if not running:
            break
    seconds = time.monotonic() - started
    left = {record.pid for record in running}
    return [Stopped(record, tuple(sent[record.pid]), seconds, record.pid in left) for record in records]

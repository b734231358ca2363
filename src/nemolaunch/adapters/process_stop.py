"""Stopping launched processes as a person would: Ctrl-C (SIGINT) first, SIGTERM after a grace period,
SIGKILL only when both were ignored. Every signal goes to the process the record names, checked again
just before it is sent, so a pid that was reused meanwhile is never signalled."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    running = list(records)
    for number, (sig, wait_s) in enumerate(steps):
        if number:
            for record in running:
                on_escalate(record, sig.name)
        running = [record for record in running if _send(record, sig)]
        for record in running:
            sent[record.pid].append(sig.name)
        running = _wait_gone(running, wait_s)
        if not running:
            break
    seconds = time.monotonic() - started
    left = {record.pid for record in running}
    return [Stopped(record, tuple(sent[record.pid]), seconds, record.pid in left) for record in records]

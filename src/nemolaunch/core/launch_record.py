"""What nemolaunch knows about the servers and workers it launched: a record per launch, as pure data.

`serve`, `run` and `rpc-worker` exec llama.cpp, so nemolaunch itself is gone once the server runs; the
record, written just before the exec, is what `ps`, `stop` and `logs` find it by. The exec keeps the
pid and the process's start time, so a record names its process exactly: a pid that is gone, or that
now belongs to a process started at another time (the pid was reused), makes the record stale.
Everything here is pure: the adapters read the records and the processes, these functions judge them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

LaunchKind = Literal["server", "cli", "rpc-worker"]
RECORD_VERSION = 1
#: How far a process's start time may differ from the record's and still be the same process: psutil
#: derives it from boot time plus clock ticks, so two reads of one process can differ by a tick or so.
START_TIME_TOLERANCE_S = 1.0


class LaunchRecord(BaseModel):
    """One launch, as written before the exec. Never a secret: the key file's path at most."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = RECORD_VERSION
    kind: LaunchKind
    pid: int
    process_started: float  # the process's start time (epoch seconds), the same before and after exec
    argv: list[str]  # the exact command exec'd
    host: str | None = None
    port: int | None = None
    alias: str | None = None
    model: str | None = None
    quant: str | None = None
    placement: str | None = None
    forecast_bytes: int | None = None
    log_file: str | None = None
    api_key_file: str | None = None

    @property
    def binary(self) -> str:
        return Path(self.argv[0]).name

    @property
    def address(self) -> str | None:
        return f"{self.host}:{self.port}" if self.host is not None and self.port is not None else None


@dataclass(frozen=True)
class ProcessFacts:
    """What the operating system says about a pid now."""

    pid: int
    started: float  # epoch seconds
    cmdline: tuple[str, ...]
    zombie: bool = False


Liveness = Literal["live", "starting", "stale"]


def liveness(record: LaunchRecord, facts: ProcessFacts | None) -> Liveness:
    """Is the record's process still the one it launched?

    ``starting``: the very process that wrote the record, not yet exec'd (it runs nemolaunch's Python
    for a moment more). ``stale``: gone, a zombie, or a pid reused by a process started at another time
    or running another program.
    """
    if facts is None or facts.zombie:
        return "stale"
    if not math.isclose(facts.started, record.process_started, abs_tol=START_TIME_TOLERANCE_S):
        return "stale"
    if facts.cmdline and Path(facts.cmdline[0]).name == record.binary:
        return "live"
    if any("nemolaunch" in word for word in facts.cmdline[:3]):
        return "starting"
    return "stale"  # the same start time but another program: it exec'd something else since


def is_port_number(target: str) -> bool:
    return target.isdigit() and 1 <= int(target) <= 65535


def find_targets(records: Sequence[LaunchRecord], target: str) -> list[LaunchRecord]:
    """The launches a word names: a port, else a pid, else an alias (numbers are tried as ports first,
    as `stop 8001` is what people type; a pid that is also some launch's port is named by that port)."""
    if target.isdigit():
        number = int(target)
        by_port = [record for record in records if record.port == number]
        return by_port or [record for record in records if record.pid == number]
    return [record for record in records if record.alias == target]


def describe_launch(record: LaunchRecord) -> str:
    """A launch in a few words: `llama-server pid 1234 on 127.0.0.1:8001 (tiny)`."""
    where = f" on {record.address}" if record.address else ""
    alias = f" ({record.alias})" if record.alias else ""
    return f"{record.binary} pid {record.pid}{where}{alias}"


# --- what a running llama-server says about itself -----------------------------------------------------
_METRIC_LINE = re.compile(r"^llamacpp:(?P<name>[a-z_]+)\s+(?P<value>\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """llama-server's /metrics (Prometheus text) as name -> value, without the ``llamacpp:`` prefix."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line.strip())
        if match is None:
            continue
        try:
            values[match["name"]] = float(match["value"])
        except ValueError:
            continue
    return values


def generation_speed(metrics: dict[str, float]) -> float | None:
    """Tokens per second over the requests the server has finished (its own totals).

    The totals, not the ``predicted_tokens_seconds`` gauge: llama-server resets that gauge on every
    scrape, so it would say 0 to whoever asks second.
    """
    tokens = metrics.get("tokens_predicted_total")
    seconds = metrics.get("tokens_predicted_seconds_total")
    if not tokens or not seconds:
        return None
    return tokens / seconds


def busy_slots(slots: Iterable[object]) -> tuple[int, int]:
    """(busy, total) from llama-server's /slots: one object per slot with ``is_processing``."""
    listed = [slot for slot in slots if isinstance(slot, dict)]
    return sum(1 for slot in listed if slot.get("is_processing")), len(listed)


def human_duration(seconds: float) -> str:
    """An uptime as people read it: 45s, 12m 3s, 5h 2m, 3d 4h."""
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"

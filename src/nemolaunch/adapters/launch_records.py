"""The launch records on disk, and the processes they name.

One JSON file per launch, ``<pid>.json``, in the user state folder (``~/.local/state/nemolaunch/launches``
on Linux). Each is written whole or not at all (a temporary file in the same folder, then a rename), so a
reader never takes half a record for one. Records whose process is gone or is another program now are
removed by whoever reads them (:func:`live_launches`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from nemolaunch.core.launch_record import LaunchRecord, Liveness, ProcessFacts, liveness


def records_folder() -> Path:
    from platformdirs import user_state_path

    return user_state_path("nemolaunch") / "launches"


def process_facts(pid: int) -> ProcessFacts | None:
    """What the OS says about ``pid`` now; None when there is no such process (or it cannot be read)."""
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            status = process.status()
            started = process.create_time()
            try:
                cmdline = tuple(process.cmdline())
            except psutil.ZombieProcess:
                cmdline = ()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return ProcessFacts(pid=pid, started=started, cmdline=cmdline, zombie=status == psutil.STATUS_ZOMBIE)


def this_process_started() -> float:
    import psutil

    return psutil.Process().create_time()


def write_record(record: LaunchRecord, folder: Path | None = None) -> Path:
    """Write ``record`` atomically; the folder is private (0700): argv names the user's files."""
    folder = folder or records_folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / f"{record.pid}.json"
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{record.pid}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(record.model_dump_json(indent=1))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def remove_record(pid: int, folder: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        ((folder or records_folder()) / f"{pid}.json").unlink()


@dataclass(frozen=True)
class Launch:
    record: LaunchRecord
    state: Liveness
    facts: ProcessFacts | None


def read_records(folder: Path | None = None) -> list[tuple[Path, LaunchRecord | None]]:
    """Every record file with what it holds (None: unreadable, or not a record: it is pruned too)."""
    folder = folder or records_folder()
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []
    found: list[tuple[Path, LaunchRecord | None]] = []
    for path in paths:
        try:
            found.append((path, LaunchRecord.model_validate(json.loads(path.read_text()))))
        except FileNotFoundError:
            continue  # pruned by another reader meanwhile
        except (OSError, ValueError, ValidationError):
            found.append((path, None))
    return found


def live_launches(folder: Path | None = None, *, prune: bool = True) -> list[Launch]:
    """The launches whose process still runs, oldest first; stale records are removed (``prune``)."""
    launches: list[Launch] = []
    for path, record in read_records(folder):
        facts = process_facts(record.pid) if record is not None else None
        state = liveness(record, facts) if record is not None else "stale"
        if state == "stale":
            if prune:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            continue
        assert record is not None
        launches.append(Launch(record, state, facts))
    return sorted(launches, key=lambda launch: launch.record.process_started)

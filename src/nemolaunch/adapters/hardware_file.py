"""Reading a `--hardware FILE`: the facts of another machine, recorded with `nemolaunch doctor --json`.

The file is read here; ``nemolaunch.core.hardware`` parses and validates what it says.
"""

from __future__ import annotations

from pathlib import Path

from nemolaunch.core.cluster import Worker, parse_machine_file
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.errors import HardwareFileMissing, HardwareFileNotJson


def load_hardware_facts(path: Path) -> HardwareFacts:
    """The machine described by a ``--hardware`` file (the head's, for a cluster file)."""
    return load_machine(path)[0]


def load_machine(path: Path) -> tuple[HardwareFacts, tuple[Worker, ...]]:
    """The machine described by a ``--hardware`` file, and its RPC workers when it describes a cluster."""
    path = path.expanduser()
    if path.is_dir():
        raise HardwareFileNotJson(path=str(path), detail="it is a folder, not a file")
    if not path.is_file():
        raise HardwareFileMissing(path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HardwareFileNotJson(path=str(path), detail="it is not UTF-8 text") from exc
    except OSError as exc:
        raise HardwareFileNotJson(path=str(path), detail=f"it cannot be read: {exc.strerror or exc}") from exc
    return parse_machine_file(text, source=str(path))

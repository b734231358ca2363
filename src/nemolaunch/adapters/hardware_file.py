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
    if not path.exists() and not path.is_symlink():  # a link that loops or dangles is refused by the reader
        raise HardwareFileMissing(path=str(path))
    from nemolaunch.adapters.small_files import read_small_bytes

    # A regular file only, capped: --hardware /dev/zero or a FIFO gets one line, not a hang or a MemoryError.
    raw = read_small_bytes(path, what="hardware facts file", option="--hardware")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HardwareFileNotJson(path=str(path), detail="it is not UTF-8 text") from exc
    return parse_machine_file(text, source=str(path))

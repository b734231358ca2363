"""A memory cgroup to run llama-server in, with less memory than its model: for the disk-backed test and
benchmarks/disk_backed.py (which imports this file from tests/).

cgroup v2 (``memory.max``) where the unified hierarchy has the memory controller, else v1
(``memory.limit_in_bytes`` under /sys/fs/cgroup/memory). Either way the limit bounds the page cache the
group's processes fault in, not only their own memory, which is what makes a model "larger than memory"
on a machine with plenty of it. A page already cached by someone else is charged to them, not to the
group, so a model's pages are dropped (``posix_fadvise(DONTNEED)``) before each run.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryCgroup:
    path: Path
    version: int  # 1 or 2

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def prefix(self) -> list[str]:
        """An argv prefix that moves the command into the group before it starts (its children stay there)."""
        return ["sh", "-c", f'echo $$ > {self.procs} && exec "$@"', "sh"]

    def peak_bytes(self) -> int:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return int((self.path / name).read_text().split()[0])

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Remove the group (once its processes, which the caller started and stopped, are gone)."""
        for _ in range(50):
            if not self.procs.read_text().split():
                break
            time.sleep(0.1)
        if self.version == 1:
            with contextlib.suppress(OSError):
                (self.path / "memory.force_empty").write_text("0")  # hand its page cache back first
        self.path.rmdir()


def _v2_memory() -> bool:
    controllers = ROOT / "cgroup.controllers"
    return controllers.exists() and "memory" in controllers.read_text().split()


def make_memory_cgroup(name: str, limit_bytes: int) -> MemoryCgroup:
    """A new group ``name`` limited to ``limit_bytes``; raises OSError where none can be made here."""
    if _v2_memory():
        path, version, limit = ROOT / name, 2, "memory.max"
    elif (ROOT / "memory" / "memory.limit_in_bytes").exists():
        path, version, limit = ROOT / "memory" / name, 1, "memory.limit_in_bytes"
    else:
        raise OSError("no memory cgroup controller is mounted at /sys/fs/cgroup")
    path.mkdir()
    group = MemoryCgroup(path, version)
    try:
        (path / limit).write_text(str(limit_bytes))
        if version == 2:
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")  # paging out to swap would hide the limit
        else:
            with contextlib.suppress(OSError):
                (path / "memory.swappiness").write_text("0")
    except OSError:
        group.remove()
        raise
    return group


def why_no_memory_cgroup() -> str | None:
    """None where a memory cgroup can be made and limited here; else why not (for a loud skip)."""
    try:
        group = make_memory_cgroup(f"nl17-probe-{os.getpid()}", 256 * 1024**2)
    except OSError as exc:
        return f"no memory cgroup can be made here ({exc})"
    group.remove()
    return None


def drop_cached_pages(path: Path) -> None:
    """Drop a file's pages from the page cache, so the next read comes from disk and is charged to its reader."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

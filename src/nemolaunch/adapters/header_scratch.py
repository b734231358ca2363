"""The temporary folder a remote GGUF header is parsed in, and the ones killed runs left behind.

The ``gguf`` reader wants a whole file, so a header read from the Hub is parsed inside a sparse file of
the model's full size (:func:`nemolaunch.adapters.gguf_header.header_from_prefix`), in a folder of the
system's temporary directory. A run killed while it parses (SIGKILL, a closed terminal) never removes
its folder; the next one that makes such a folder removes those whose owner is gone.

A folder's name carries the pid of the process that made it (``nemolaunch-header-<pid>-<random>``),
so a folder of a run still going (another terminal's plan) is left alone. One without a pid (from an
older nemolaunch) is removed once it is older than any header read takes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "nemolaunch-header-"
_WITH_PID = re.compile(re.escape(PREFIX) + r"(?P<pid>\d+)-")
#: A folder without a pid is removed past this age: a header read is bounded well below it.
UNOWNED_STALE_AFTER_S = 15 * 60


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A fresh folder named for this process, removed on the way out; stale ones are removed first."""
    remove_stale(Path(tempfile.gettempdir()))
    # Cleanup errors ignored: a folder removed meanwhile (by hand) must not turn into a traceback.
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", ignore_cleanup_errors=True) as folder:
        yield Path(folder)


def remove_stale(parent: Path, *, now: float | None = None) -> list[Path]:
    """Remove this user's header folders under ``parent`` whose process is gone; return them."""
    now = time.time() if now is None else now
    removed = []
    try:
        candidates = [path for path in parent.iterdir() if path.name.startswith(PREFIX)]
    except OSError:
        return []
    for path in candidates:
        try:
            info = path.lstat()
        except OSError:
            continue
        if info.st_uid != os.getuid() or not path.is_dir() or path.is_symlink():
            continue  # another user's (theirs to clean), or not a folder this module makes
        match = _WITH_PID.match(path.name)
        if match is not None:
            stale = not _owner_alive(int(match["pid"]), made_at=info.st_mtime)
        else:
            stale = now - info.st_mtime > UNOWNED_STALE_AFTER_S
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log.debug("removed %s, left by a run that ended without cleaning up", path)
    return removed


def _owner_alive(pid: int, *, made_at: float) -> bool:
    """Whether the process that made a folder at ``made_at`` still runs: its pid is taken by a process
    started no later than that (a younger one got the pid after the maker died)."""
    import psutil

    if pid == os.getpid():
        return True
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return True  # cannot tell: leave it
    return started <= made_at + _CLOCK_SLACK_S


# create_time is rounded to the clock ticks of /proc (10 ms), a folder's mtime is not.
_CLOCK_SLACK_S = 1.0

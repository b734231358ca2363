"""The sha256 of a partial file, read back as its contiguous written prefix grows.

Hashing runs in a thread of its own that follows the file's contiguous written prefix, reading it
back from the page cache. sha256 is sequential, so only bytes in file order can be hashed, and with
several connections most bytes arrive out of order. Reading back costs little (~0.04 s of CPU per
GB, measured here) and keeps hashing (~2 GB/s per core) off the threads that receive. Pieces are
taken in order, so the prefix keeps growing: what is left to hash when the last byte arrives is
about one request per connection of the file. After each block is hashed the kernel is told to start
writing it to disk, so the fsync before the rename has little left to wait for.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import sys
import threading
from collections.abc import Callable

from nemolaunch.hub.partial_state import PartialFile

_HASH_BLOCK = 8 * 1024 * 1024
_PROGRESS_EVERY_S = 0.2


class Stopped(Exception):
    """Ctrl-C was pressed: the partial file is left as it is, to resume from."""


class PrefixHasher:
    """The sha256 of a partial file, read back as its contiguous written prefix grows."""

    def __init__(self, state: PartialFile, quit_event: threading.Event) -> None:
        self.state = state
        self.quit = quit_event
        self.hashed = 0
        self.error: BaseException | None = None
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="nemolaunch-hash", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def result(self, stop: threading.Event, on_progress: Callable[[int], None]) -> str:
        while self._thread.is_alive():
            self._thread.join(_PROGRESS_EVERY_S)
            if stop.is_set():
                self.quit.set()
                raise Stopped
            on_progress(self.hashed)
        if self.error is not None:
            raise self.error
        return self._digest.hexdigest()

    def _run(self) -> None:
        size = self.state.size
        view = memoryview(bytearray(_HASH_BLOCK))
        try:
            with open(self.state.partial, "rb", buffering=0) as handle:
                while self.hashed < size:
                    # Whole blocks only (or the end): chasing the writers byte by byte costs more than it saves.
                    ready = self.state.wait_for_prefix(min(size, self.hashed + _HASH_BLOCK), self.quit)
                    if self.quit.is_set():
                        return
                    began = self.hashed
                    while self.hashed < ready:
                        count = handle.readinto(view[: min(len(view), ready - self.hashed)])
                        if not count:
                            raise OSError(errno.EIO, f"{self.state.partial} ended before its written bytes")
                        self._digest.update(view[:count])  # hashlib drops the GIL for large buffers
                        self.hashed += count
                    _start_writeback(handle.fileno(), began, self.hashed - began)
        except BaseException as exc:
            self.error = exc


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing these bytes to disk now, without waiting (Linux; elsewhere nothing).

    The file is fsynced before it takes its final name; bytes already on their way by then make that
    wait short, where otherwise every dirty byte of the file (up to a fifth of RAM) would be written
    only then, after the transfer.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(length), 2)  # SYNC_FILE_RANGE_WRITE


def _find_sync_file_range() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).sync_file_range  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_sync_file_range = _find_sync_file_range()

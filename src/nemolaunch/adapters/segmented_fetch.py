"""Fetch one file over several ranged connections into its partial file, hashing it as it fills.

The file is cut into pieces of ``piece_bytes`` (see :func:`piece_bytes_for`; the last one shorter). Up to
``connections`` threads fetch it, each while it holds a slot of the run's connection budget
(:mod:`connection_budget`: shared by all files, so the total stays bounded, and grown only while
more connections pay; a slot is kept from piece to piece unless the budget shrinks). A thread takes
the next piece nobody has taken, in file
order, asks for what it still lacks with one ranged GET on its kept-alive connection, reads into
its own reused 1 MiB buffer, writes each buffer at its offset (``pwrite``) and then counts it in the
sidecar (see :mod:`partial_state`), so a kill loses only what was in flight.

Hashing runs in a thread of its own that follows the file's contiguous written prefix, reading it
back from the page cache. sha256 is sequential, so only bytes in file order can be hashed, and with
several connections most bytes arrive out of order. Reading back costs little (~0.04 s of CPU per
GB, measured here) and keeps hashing (~2 GB/s per core) off the threads that receive. Pieces are
taken in order, so the prefix keeps growing: what is left to hash when the last byte arrives is
about one piece per connection of the file. After each block is hashed the kernel is told to start
writing it to disk, so the fsync before the rename has little left to wait for.

Trouble is handled per connection, as the one-connection fetch did: a stall ("no bytes for N s"), a
dropped connection, a busy server (408/429/5xx) or an expired CDN URL (asked for again) is retried
from the bytes on disk after a wait that doubles while attempts bring nothing; after five such
attempts in a row the file fails. A server that answers a ranged request with other bytes (a 200,
another range, a 416) cannot be trusted with pieces: the file starts over as one piece on one
connection, so bytes of two answers are never spliced.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nemolaunch.adapters.connection_budget import ConnectionBudget
from nemolaunch.adapters.partial_state import PartialFile
from nemolaunch.adapters.range_source import Connection, FileSource, RangeIgnored, Retry
from nemolaunch.core.download_plan import (
    DownloadEvent,
    FileProgress,
    FileRetrying,
    FileStarted,
    RemoteFile,
    VerifyProgress,
    human_bytes,
)
from nemolaunch.errors import DownloadFailed, NotEnoughDisk, TargetNotWritable

_MIB = 1024 * 1024
MIN_PIECE_BYTES = 32 * _MIB
MAX_PIECE_BYTES = 64 * _MIB
# Each read takes what has arrived (up to the buffer's free room). The buffer is written out when full,
# or when a read finds nothing more waiting and it holds this much, or was last written this long ago.
_BUFFER_BYTES = 1024 * 1024
_FLUSH_BYTES = 256 * 1024
_FLUSH_AFTER_S = 0.02
_HASH_BLOCK = 8 * 1024 * 1024
_PROGRESS_EVERY_S = 0.2
_MAX_ATTEMPTS_WITHOUT_PROGRESS = 5
_MAX_RESTARTS = 2
_RETRY_WAIT_MAX_S = 30.0


def piece_bytes_for(size: int, connections: int) -> int:
    """How big the pieces of a file of ``size`` bytes fetched over about ``connections`` connections are.

    At least two rounds of pieces per connection: what is left to hash when the last byte arrives is
    about one round, so with one round it is nearly the whole file (1 GB in 4 shards on a capped hub:
    2.07 s with one round of 32 MiB, 1.69 s with two of 16 MiB). And 32 to 64 MiB each, so that a
    request's round trip to a CDN stays small beside its transfer (and what is left to hash after the
    last byte of a big file stays a few hundred MiB): the connection budget starts with fewer
    connections than pieces are cut for, and per request costs showed there (the same 1 GB from an
    uncapped hub, connections grown as they pay: 1.3 s in 16 MiB pieces, 1.04 s in 32 MiB; capped,
    1.67 s and 1.98 s). One connection takes the file in one piece: its bytes come in order anyway.
    """
    if connections <= 1:
        return max(1, size)
    wanted = -(-size // (2 * connections))
    return min(MAX_PIECE_BYTES, max(MIN_PIECE_BYTES, -(-wanted // _MIB) * _MIB))


@dataclass(frozen=True)
class FetchSettings:
    connections: int  # most connections for this file (the run's budget is held in ``slots``)
    piece_bytes: int
    stall_timeout_s: float
    retry_wait_s: float


class Stopped(Exception):
    """Ctrl-C was pressed: the partial file is left as it is, to resume from."""


class _Quit(Exception):
    """This file's fetch is ending (another thread failed, or the file starts over)."""


def fetch_file(
    remote: RemoteFile,
    partial: Path,
    *,
    commit: str,
    source: FileSource,
    settings: FetchSettings,
    slots: ConnectionBudget,
    stop: threading.Event,
    emit: Callable[[DownloadEvent], None],
    on_bytes: Callable[[int], None],
) -> str:
    """Fetch what ``partial`` lacks of ``remote``; return the sha256 of the whole partial file."""
    try:
        state = PartialFile.open(
            partial,
            sha256=remote.sha256,
            size=remote.size,
            path=remote.path,
            commit=commit,
            piece_bytes=settings.piece_bytes,
        )
    except OSError as exc:
        raise _write_error(exc, partial, remote, 0) from exc
    try:
        emit(FileStarted(path=remote.path, size=remote.size, resume_from=state.done_bytes()))
        for _ in range(_MAX_RESTARTS + 1):
            job = _FileJob(remote, state, source, settings, slots, stop, emit, on_bytes)
            digest = job.run()
            if digest is not None:
                return digest
            # Ranges not honoured: start over as one piece, whose first request carries no Range at all.
            try:
                state = state.start_over(piece_bytes=max(1, remote.size))
            except OSError as exc:
                raise _write_error(exc, partial, remote, 0) from exc
        raise DownloadFailed(path=remote.path, attempts=job.attempts, reason=job.restart_reason)
    finally:
        state.close()


class _FileJob:
    """One pass over a file's missing pieces: its fetching threads and its hashing thread."""

    def __init__(
        self,
        remote: RemoteFile,
        state: PartialFile,
        source: FileSource,
        settings: FetchSettings,
        slots: ConnectionBudget,
        stop: threading.Event,
        emit: Callable[[DownloadEvent], None],
        on_bytes: Callable[[int], None],
    ) -> None:
        self.remote = remote
        self.state = state
        self.source = source
        self.settings = settings
        self.slots = slots
        self.stop = stop
        self.emit = emit
        self.on_bytes = on_bytes
        self.quit = threading.Event()
        self.error: BaseException | None = None
        self.restart_reason = ""
        self.attempts = 0
        self._lock = threading.Lock()
        self._queue = state.open_pieces()
        self._last_report = 0.0
        self._fd = -1

    def run(self) -> str | None:
        """The sha256 once the file is whole; None when it must start over; raises on failure or Ctrl-C."""
        hasher = _PrefixHasher(self.state, self.quit)
        try:
            self._fd = os.open(self.state.partial, os.O_WRONLY)
        except OSError as exc:
            raise _write_error(exc, self.state.partial, self.remote, self.state.done_bytes()) from exc
        try:
            hasher.start()
            threads = [
                threading.Thread(target=self._worker, name="nemolaunch-fetch", daemon=True)
                for _ in range(max(1, min(self.settings.connections, len(self._queue))))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            os.close(self._fd)
        if self.error is not None or self.stop.is_set() or self.restart_reason:
            self.quit.set()
            self.state.wake()
            if self.error is not None:
                raise self.error
            if self.stop.is_set():
                raise Stopped
            return None
        self.emit(FileProgress(path=self.remote.path, done=self.remote.size, size=self.remote.size))
        return hasher.result(
            self.stop, lambda hashed: self.emit(VerifyProgress(self.remote.path, hashed, self.remote.size))
        )

    # --- one connection ----------------------------------------------------------------------------
    def _worker(self) -> None:
        connection = self.source.connect()  # opened at its first request, kept alive from piece to piece
        buffer: memoryview | None = None
        holding = False  # a slot of the run's budget, kept from piece to piece unless the budget shrinks
        try:
            while True:
                while not holding:
                    holding = self.slots.acquire(timeout=0.2, owner=self)
                    if not holding and self._ending():
                        return
                piece = self._take_piece()
                if piece is None:
                    return
                buffer = buffer or memoryview(bytearray(_BUFFER_BYTES))
                self._fetch_piece(connection, piece, buffer)
                holding = self.slots.keep(owner=self)
        except _Quit:
            pass
        except BaseException as exc:  # raised in the file's thread, once every connection ended
            with self._lock:
                self.error = self.error or exc
            self.quit.set()
        finally:
            if holding:
                self.slots.release(owner=self)
            connection.close()

    def _ending(self) -> bool:
        return self.quit.is_set() or self.stop.is_set()

    def _take_piece(self) -> int | None:
        with self._lock:
            return self._queue.pop(0) if self._queue and not self._ending() else None

    def _fetch_piece(self, connection: Connection, piece: int, buffer: memoryview) -> None:
        failures = 0
        while True:
            start, end = self.state.missing(piece)
            if start >= end:
                return
            if self._ending():
                raise _Quit
            with self._lock:
                self.attempts += 1
            target = None
            try:
                target = self.source.target()
                asked = time.monotonic()
                body = connection.get(target, start, end, self.remote.size)
                self.slots.answered(time.monotonic() - asked)
                try:
                    self._copy(body.readinto, piece, start, min(end, start + body.length), buffer)
                finally:
                    body.close()
                continue  # a server may send less than asked: ask for the rest
            except Retry as exc:
                reason = exc.reason
                if exc.renew and target is not None:
                    self.source.renew(target)
            except RangeIgnored as exc:
                with self._lock:
                    self.restart_reason = str(exc)
                self.quit.set()
                raise _Quit from None
            failures = 0 if self.state.missing(piece)[0] > start else failures + 1
            if failures >= _MAX_ATTEMPTS_WITHOUT_PROGRESS:
                raise DownloadFailed(path=self.remote.path, attempts=self.attempts, reason=reason)
            wait_s = min(_RETRY_WAIT_MAX_S, self.settings.retry_wait_s * 2**failures)
            done = self.state.done_bytes()
            self.emit(
                FileRetrying(
                    path=self.remote.path, attempt=self.attempts + 1, reason=reason, resume_from=done, wait_s=wait_s
                )
            )
            if self.stop.wait(wait_s) or self.quit.is_set():
                raise _Quit

    def _copy(
        self, readinto: Callable[[memoryview], int], piece: int, start: int, end: int, buffer: memoryview
    ) -> None:
        """Read bytes ``[start, end)`` of the file into ``buffer``, writing it out when full or caught up."""
        position, filled = start, 0
        flushed_at = time.monotonic()
        try:
            while position + filled < end:
                if self._ending():
                    raise _Quit
                room = min(len(buffer), end - position)
                wanted = room - filled
                count = readinto(buffer[filled:room])
                filled += count
                # A read shorter than asked took all that had come: the next one may wait on the network,
                # so write now what is worth a write, rather than hold it through that wait (a kill
                # would lose it). While bytes keep coming, they gather into writes of up to 1 MiB.
                caught_up = count < wanted
                if filled == room or (
                    caught_up and (filled >= _FLUSH_BYTES or time.monotonic() - flushed_at >= _FLUSH_AFTER_S)
                ):
                    self._write(piece, buffer[:filled], position)
                    position, filled = position + filled, 0
                    flushed_at = time.monotonic()
        except (Retry, _Quit):
            if filled:  # what did arrive is the file's bytes, whatever ended the transfer
                self._write(piece, buffer[:filled], position)
            raise
        if filled:
            self._write(piece, buffer[:filled], position)

    def _write(self, piece: int, data: memoryview, offset: int) -> None:
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], offset + written)
            self.state.advance(piece, len(data))
        except OSError as exc:
            raise _write_error(exc, self.state.partial, self.remote, self.state.done_bytes()) from exc
        self.on_bytes(len(data))
        now = time.monotonic()
        if now - self._last_report >= _PROGRESS_EVERY_S:
            self._last_report = now  # a race here costs one event more or less, never a wrong count
            self.emit(FileProgress(path=self.remote.path, done=self.state.done_bytes(), size=self.remote.size))


class _PrefixHasher:
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


def _write_error(exc: OSError, partial: Path, remote: RemoteFile, on_disk: int) -> Exception:
    if exc.errno == errno.ENOSPC:
        free = 0
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(partial.parent).free
        needed = remote.size - on_disk
        return NotEnoughDisk(
            target=str(partial.parent),
            needed=human_bytes(needed),
            free=human_bytes(free),
            missing=human_bytes(max(0, needed - free)),
            margin=human_bytes(0),
            needed_bytes=needed,
            free_bytes=free,
        )
    return TargetNotWritable(path=str(partial), reason=exc.strerror or str(exc))

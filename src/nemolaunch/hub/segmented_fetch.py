"""Fetch one file over several ranged connections into its partial file, hashing it as it fills.

The file is cut into pieces of ``piece_bytes`` (``piece_runs``; the last one shorter): the
sidecar counts each piece's written bytes (:mod:`partial_state`), so a kill loses only what was in
flight. Up to ``connections`` threads fetch it, each while it holds a slot of the run's connection
budget (:mod:`connection_budget`: shared by all files, so the total stays bounded, and grown only
while more connections pay; a slot is kept from run to run unless the budget shrinks).

A thread takes a *run* of pieces: the first one nobody has taken (in file order, so the hash can
follow), and, when this is the file's only connection and the budget has none free, every fresh
piece right after it. It asks for a run with ranged GETs on its kept-alive connection, each for
about a second's worth of pieces at the speed it last saw (one piece at first): a fast link's file
comes in a few requests instead of one per piece (1 GB in 4 shards from the loopback hub: 1.02 s,
against 1.11 s a piece a request; 10 ms a request here, a round trip to a CDN), and a slow one's
requests stay short. When a thread finds nothing left to take, it takes the pieces of the longest
run past that run's request in flight: nothing is ever asked for twice, and no request is cut short.
It reads into its own reused 1 MiB buffer and writes each buffer at its offset (``pwrite``), then
counts it in the sidecar.

The file's sha256 follows its contiguous written prefix in a thread of its own (:mod:`prefix_hash`).

Trouble is handled per connection, as the one-connection fetch did: a stall ("no bytes for N s"), a
dropped connection, a busy server (408/429/5xx) or an expired CDN URL (asked for again) is retried
from the bytes on disk after a wait that doubles while attempts bring nothing; after five such
attempts in a row the file fails. A server that answers a ranged request with other bytes (a 200,
another range, a 416) cannot be trusted with pieces: the file starts over as one piece on one
connection, so bytes of two answers are never spliced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from nemolaunch.hub.connection_budget import ConnectionBudget
from nemolaunch.hub.partial_state import PartialFile
from nemolaunch.hub.piece_runs import Pace, Run
from nemolaunch.hub.prefix_hash import PrefixHasher, Stopped
from nemolaunch.hub.range_source import Connection, FileSource, RangeIgnored, Retry

# Each read takes what has arrived (up to the buffer's free room). The buffer is written out when full,
# or when a read finds nothing more waiting and it holds this much, or was last written this long ago.
_BUFFER_BYTES = 1024 * 1024
_FLUSH_BYTES = 256 * 1024
_FLUSH_AFTER_S = 0.02
_PROGRESS_EVERY_S = 0.2
_MAX_ATTEMPTS_WITHOUT_PROGRESS = 5
_MAX_RESTARTS = 2
_RETRY_WAIT_MAX_S = 30.0


@dataclass(frozen=True)
class FetchSettings:
    connections: int  # most connections for this file (the run's budget is held in ``slots``)
    piece_bytes: int
    stall_timeout_s: float
    retry_wait_s: float


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
        self._queue = state.open_pieces()  # pieces nobody has taken, in file order
        self._runs: list[Run] = []  # those being fetched, one per connection
        self._last_report = 0.0
        self._fd = -1

    def run(self) -> str | None:
        """The sha256 once the file is whole; None when it must start over; raises on failure or Ctrl-C."""
        hasher = PrefixHasher(self.state, self.quit)
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
        connection = self.source.connect()  # opened at its first request, kept alive from run to run
        buffer: memoryview | None = None
        pace = Pace()
        holding = False  # a slot of the run's budget, kept from run to run unless the budget shrinks
        try:
            while True:
                while not holding:
                    holding = self.slots.acquire(timeout=0.2, owner=self)
                    if not holding and self._ending():
                        return
                run = self._take_run()
                if run is None:
                    return
                buffer = buffer or memoryview(bytearray(_BUFFER_BYTES))
                try:
                    self._fetch_run(connection, run, buffer, pace)
                finally:
                    with self._lock:
                        self._runs.remove(run)
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

    def _take_run(self) -> Run | None:
        """The next pieces for a connection: the first nobody has taken, and the fresh ones right after
        it when this is the file's only connection and the budget has no other free; when none is
        left, those of the longest run past its request in flight."""
        with self._lock:
            if self._ending():
                return None
            if not self._queue:
                self._cut_longest_run()
            if not self._queue:
                return None
            first = last = self._queue.pop(0)
            if self.slots.alone(self):
                while self._queue and self._queue[0] == last + 1 and self.state.done[last + 1] == 0:
                    last = self._queue.pop(0)
            run = Run(first, last)
            self._runs.append(run)
            return run

    def _cut_longest_run(self) -> None:
        """Give the pieces of the run with the most left beyond its current request back to the queue."""
        longest: tuple[int, Run] | None = None
        for run in self._runs:
            with run.lock:
                spare = run.last - run.requested_to
            if spare > 0 and (longest is None or spare > longest[0]):
                longest = spare, run
        if longest is not None:
            run = longest[1]
            with run.lock:  # its connection asks for no piece past ``last``: from its next request on
                self._queue = sorted([*self._queue, *range(run.requested_to + 1, run.last + 1)])
                run.last = run.requested_to

    def _run_position(self, run: Run) -> int:
        """The first byte of ``run`` not yet written (its end when whole); its pieces fill in order."""
        for piece in range(run.first, run.last + 1):
            start, end = self.state.missing(piece)
            if start < end:
                return start
        return self.state.bounds(run.last)[1]

    def _fetch_run(self, connection: Connection, run: Run, buffer: memoryview, pace: Pace) -> None:
        failures = 0
        while True:
            with run.lock:
                start = self._run_position(run)
                if start >= self.state.bounds(run.last)[1]:
                    return
                first = start // self.state.piece_bytes
                run.requested_to = min(run.last, first + pace.pieces(self.state.piece_bytes) - 1)
                end = self.state.bounds(run.requested_to)[1]
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
                    self._copy(body.readinto, start, min(end, start + body.length), buffer)
                finally:
                    body.close()
                pace.took(min(end, start + body.length) - start, time.monotonic() - asked)
                continue  # the next request of the run; a server may also send less than asked
            except Retry as exc:
                reason = exc.reason
                if exc.renew and target is not None:
                    self.source.renew(target)
            except RangeIgnored as exc:
                with self._lock:
                    self.restart_reason = str(exc)
                self.quit.set()
                raise _Quit from None
            with run.lock:
                moved = self._run_position(run) > start
            failures = 0 if moved else failures + 1
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

    def _copy(self, readinto: Callable[[memoryview], int], start: int, end: int, buffer: memoryview) -> None:
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
                    self._write(buffer[:filled], position)
                    position, filled = position + filled, 0
                    flushed_at = time.monotonic()
        except (Retry, _Quit):
            if filled:  # what did arrive is the file's bytes, whatever ended the transfer
                self._write(buffer[:filled], position)
            raise
        if filled:
            self._write(buffer[:filled], position)

    def _write(self, data: memoryview, offset: int) -> None:
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], offset + written)
            position, stop = offset, offset + len(data)
            while position < stop:  # counted in each piece it fills (a request may span several)
                piece = position // self.state.piece_bytes
                piece_end = min(self.state.bounds(piece)[1], stop)
                self.state.advance(piece, piece_end - position)
                position = piece_end
        except OSError as exc:
            raise _write_error(exc, self.state.partial, self.remote, self.state.done_bytes()) from exc
        self.on_bytes(len(data))
        now = time.monotonic()
        if now - self._last_report >= _PROGRESS_EVERY_S:
            self._last_report = now  # a race here costs one event more or less, never a wrong count
            self.emit(FileProgress(path=self.remote.path, done=self.state.done_bytes(), size=self.remote.size))


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

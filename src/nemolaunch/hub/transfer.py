"""One download_quant call at work: each file made present and verified, in worker threads.

Per file: trust a verified record or hash what is on disk; else, under huggingface_hub's own lock
for that file, fetch it (:mod:`segmented_fetch`), check its sha256 before it takes its final name,
then link it where huggingface_hub would. Workers hand events to the caller's thread, which alone
calls the progress callback.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from nemolaunch.core.download_plan import (
    ChecksumRefetch,
    DownloadEvent,
    FileReady,
    FileStarted,
    FileVerified,
    OrphansRemoved,
    RemoteFile,
    VerifyProgress,
    WaitingForLock,
    XetFallback,
)
from nemolaunch.errors import ChecksumMismatch, NemolaunchError, ServedSizeMismatch, first_line
from nemolaunch.hub import partial_state
from nemolaunch.hub.api import resolve_url, translate
from nemolaunch.hub.connection_budget import ConnectionBudget
from nemolaunch.hub.layout import Layout, size_or_zero
from nemolaunch.hub.piece_runs import piece_bytes_for
from nemolaunch.hub.range_source import FileSource
from nemolaunch.hub.segmented_fetch import FetchSettings, Stopped, fetch_file
from nemolaunch.hub.verify import HashStopped, VerifiedState, sha256_of_file

ProgressCallback = Callable[[DownloadEvent], None]


class Run:
    """Settings and shared state of one download_quant call; its methods run in worker threads.

    Workers never call the progress callback: they hand events to ``self.emit``, which the main
    thread's loop delivers.
    """

    def __init__(
        self,
        *,
        repo_id: str,
        layout: Layout,
        endpoint: str,
        token: str | None,
        stall_timeout_s: float,
        retry_wait_s: float,
        connections: int,
        piece_bytes: int | None,
        files_at_once: int,
        verify: bool,
        prefer_xet: bool,
        stop: threading.Event,
    ) -> None:
        self.repo_id = repo_id
        self.layout = layout
        self.endpoint = endpoint
        self.token = token
        self.settings = FetchSettings(
            connections=connections,
            piece_bytes=piece_bytes or 0,  # 0: sized per file, for the share of connections it will likely get
            stall_timeout_s=stall_timeout_s,
            retry_wait_s=retry_wait_s,
        )
        self.connections_per_file = max(1, connections // max(1, files_at_once))
        # The run's budget of connections, shared by every file it fetches: a few at first, more while
        # more pay. Pieces are sized for the most it may grow to.
        self.slots = ConnectionBudget(most=connections, owners=files_at_once)
        self.verify = verify
        self.prefer_xet = prefer_xet
        self.stop = stop
        self.emit: Callable[[DownloadEvent], None] = lambda event: None  # set by run_parallel
        self.state = VerifiedState.load(layout.state_path, layout.state_root)
        self.fetched_bytes = 0
        self._lock = threading.Lock()

    # --- a file, start to finish ---------------------------------------------------------------
    def materialize(self, remote: RemoteFile) -> Path:
        """Make ``remote`` present under its final name with the right sha256; return the path to use."""
        actual = ""
        for attempt in range(2):
            data = self.layout.complete_file(remote)
            if data is None and self.prefer_xet and attempt == 0:
                data = self._try_xet(remote)
            if data is None:
                actual = self._fetch(remote)
            else:
                actual = self._check_existing(remote, data)
                if actual != remote.sha256:
                    self.layout.discard(remote)
            if actual == remote.sha256:
                final = self.layout.finish(remote, token=self.token, endpoint=self.endpoint)
                self.emit(FileReady(path=remote.path, local_path=str(final)))
                return final
            if attempt == 0:
                self.emit(ChecksumRefetch(path=remote.path, expected=remote.sha256, actual=actual))
        raise ChecksumMismatch(
            path=remote.path,
            expected=remote.sha256,
            actual=actual,
            detail="fetched twice, damaged both times, and deleted: try again later",
        )

    def check_offline(self, remote: RemoteFile) -> Path:
        final = self.layout.final_path(remote)
        assert final is not None
        actual = self._check_existing(remote, final)
        if actual != remote.sha256:
            raise ChecksumMismatch(
                path=remote.path,
                expected=remote.sha256,
                actual=actual,
                detail="offline, so it was kept: run again with the Hub reachable to fetch it again",
            )
        self.emit(FileReady(path=remote.path, local_path=str(final)))
        return final

    # --- verification ------------------------------------------------------------------------------
    def _check_existing(self, remote: RemoteFile, data: Path) -> str:
        if not self.verify:
            with self._lock:
                recorded = self.state.matches(data, remote.sha256)
            if recorded:
                self.emit(FileVerified(path=remote.path, from_record=True))
                return remote.sha256
        return self._hash_and_record(remote, data)

    def _hash(self, remote: RemoteFile, path: Path) -> str:
        """The sha256 of ``path`` (which holds ``remote``'s bytes), with progress; Ctrl-C stops it."""
        try:
            return sha256_of_file(
                path,
                on_progress=lambda hashed: self.emit(VerifyProgress(remote.path, hashed, remote.size)),
                should_stop=self.stop.is_set,
            )
        except HashStopped:
            raise Stopped from None

    def _hash_and_record(self, remote: RemoteFile, data: Path) -> str:
        actual = self._hash(remote, data)
        if actual == remote.sha256:
            self._record(data, actual)
            self.emit(FileVerified(path=remote.path, from_record=False))
        return actual

    def _record(self, data: Path, sha256: str) -> None:
        with self._lock:
            self.state.record(data, sha256)
            self.state.save()

    # --- fetching ------------------------------------------------------------------------------------
    def _fetch(self, remote: RemoteFile) -> str:
        """Fetch ``remote`` into its partial file, resuming; move it into place only if its sha256 matches.

        Returns the sha256 of the fetched bytes; on a mismatch the partial file is deleted.
        """
        with self._file_lock(remote):
            # Another process may have finished this file while we waited for its lock.
            done = self.layout.complete_file(remote)
            if done is not None:
                actual = self._check_existing(remote, done)
                if actual != remote.sha256:
                    self.layout.discard(remote)
                return actual
            self._remove_orphans(remote)
            partial = self.layout.partial_path(remote)
            commit = self.layout.require_commit()
            source = FileSource(
                repo_id=self.repo_id,
                path=remote.path,
                url=resolve_url(self.endpoint, self.repo_id, commit, remote.path),
                token=self.token,
                stall_timeout_s=self.settings.stall_timeout_s,
                translate=lambda exc: translate(
                    exc,
                    repo_id=self.repo_id,
                    revision=commit,
                    endpoint=self.endpoint,
                    token=self.token,
                    path=remote.path,
                ),
            )
            try:
                actual = fetch_file(
                    remote,
                    partial,
                    commit=commit,
                    source=source,
                    settings=self._settings_for(remote),
                    slots=self.slots,
                    stop=self.stop,
                    emit=self.emit,
                    on_bytes=self._count,
                )
            except ServedSizeMismatch:
                # Bytes of a file that is not the one listed: no later run could finish them.
                partial_state.discard(partial)
                raise
            if actual != remote.sha256:
                partial_state.discard(partial)
                return actual
            # Make the bytes durable before the rename publishes them under the final name.
            with partial.open("rb") as handle:
                os.fsync(handle.fileno())
            self.emit(FileVerified(path=remote.path, from_record=False))
            data = self.layout.data_path(remote)
            data.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, data)  # same folder tree, same filesystem: atomic
            partial_state.sidecar_of(partial).unlink(missing_ok=True)
            self._record(data, actual)
            return actual

    def _settings_for(self, remote: RemoteFile) -> FetchSettings:
        if self.settings.piece_bytes:
            return self.settings
        return replace(self.settings, piece_bytes=piece_bytes_for(remote.size, self.connections_per_file))

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.fetched_bytes += nbytes
        self.slots.count(nbytes)

    @contextlib.contextmanager
    def _file_lock(self, remote: RemoteFile) -> Iterator[None]:
        """huggingface_hub's own lock for this file, so ``hf download`` and we never write it at once."""
        from filelock import Timeout  # huggingface_hub's own dependency, raised by its lock
        from huggingface_hub.utils import WeakFileLock

        lock_path = self.layout.lock_path(remote)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(WeakFileLock(lock_path, timeout=1))
            except Timeout:
                self.emit(WaitingForLock(path=remote.path, lock=str(lock_path)))
                held.enter_context(WeakFileLock(lock_path))
            yield

    def _remove_orphans(self, remote: RemoteFile) -> None:
        orphans = self.layout.orphans(remote)
        removed, freed = [], 0
        for orphan in orphans:
            size = size_or_zero(orphan)
            with contextlib.suppress(FileNotFoundError):
                orphan.unlink()
                removed.append(str(orphan))
                freed += size
        if removed:
            self.emit(OrphansRemoved(paths=tuple(removed), nbytes=freed))

    # --- Xet, when asked for ---------------------------------------------------------------------------
    def _try_xet(self, remote: RemoteFile) -> Path | None:
        """Fetch through huggingface_hub (Xet) where the Hub offers Xet; None means: use plain HTTP.

        The choice of transport is made by which function is called, not by a process-wide switch
        (HF_HUB_DISABLE_XET is read once, at import, and changing os.environ would affect every
        thread): the plain-HTTP fallback is this module's own resumable path, which never uses Xet.
        """
        import importlib.util

        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download

        # What huggingface_hub checks before it uses Xet: the package, and the user's HF_HUB_DISABLE_XET.
        if constants.HF_HUB_DISABLE_XET or importlib.util.find_spec("hf_xet") is None:
            return None
        url = resolve_url(self.endpoint, self.repo_id, self.layout.require_commit(), remote.path)
        try:
            if get_hf_file_metadata(url, token=self.token or False).xet_file_data is None:
                return None
            self.emit(FileStarted(path=remote.path, size=remote.size, resume_from=0))
            hf_hub_download(
                self.repo_id,
                remote.path,
                revision=self.layout.require_commit(),
                token=self.token or False,
                endpoint=self.endpoint,
                **self.layout.hf_target(),
            )
        except Exception as exc:
            self.emit(XetFallback(path=remote.path, reason=first_line(exc)))
            return None
        return self.layout.complete_file(remote)


# --- running jobs in parallel, events in the caller's thread ---------------------------------------
def run_parallel(
    jobs: list[Callable[[], Path]],
    *,
    max_workers: int,
    emit: ProgressCallback,
    stop: threading.Event,
    sink: Run,
) -> list[Path]:
    """Run ``jobs`` on at most ``max_workers`` daemon threads; deliver their events here, in order.

    Daemon threads, not a ThreadPoolExecutor: after Ctrl-C the process must be able to exit while
    a worker still waits on a stalled socket (up to the stall timeout), and an executor's threads
    are joined at exit. A partial file never needs a worker's cooperation to stay resumable.
    """
    inbox: queue.Queue[tuple[str, int, Any]] = queue.Queue()
    pending: queue.Queue[int] = queue.Queue()
    for index in range(len(jobs)):
        pending.put(index)
    sink.emit = lambda event: inbox.put(("event", -1, event))

    def work() -> None:
        while not stop.is_set():
            try:
                index = pending.get_nowait()
            except queue.Empty:
                return
            try:
                inbox.put(("done", index, jobs[index]()))
            except Stopped:
                return
            except BaseException as exc:  # handed to the caller's thread, raised there
                inbox.put(("failed", index, exc))

    for _ in range(max(1, min(max_workers, len(jobs)))):
        threading.Thread(target=work, name="nemolaunch-download", daemon=True).start()

    results: dict[int, Path] = {}
    failures: list[BaseException] = []
    while len(results) + len(failures) < len(jobs):
        try:
            kind, index, payload = inbox.get(timeout=0.2)  # wakes often, so Ctrl-C is handled at once
        except queue.Empty:
            continue
        if kind == "event":
            emit(payload)
        elif kind == "done":
            results[index] = payload
        else:
            failures.append(payload)
    while not inbox.empty():  # events sent just before the last result
        kind, _, payload = inbox.get_nowait()
        if kind == "event":
            emit(payload)
    if failures:
        # Other files were let finish: their bytes are worth keeping. Report the first trouble.
        first = next((exc for exc in failures if isinstance(exc, NemolaunchError)), failures[0])
        raise first
    return [results[index] for index in range(len(jobs))]

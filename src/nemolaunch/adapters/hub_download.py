"""Download a quant's files from the Hugging Face Hub, resumably, into the cache huggingface_hub uses.

What huggingface_hub 2.4.0 does on its own (observed against ``tests/fakehub.py``):

- ``hf_hub_download`` streams each file into ``blobs/<etag>.<8 random hex>.incomplete`` and renames it
  to ``blobs/<etag>`` when done. A dropped connection is resumed within the process (``Range``, in
  10 MiB steps), but after the process is killed the next run starts that file from zero under a new
  random name, and the killed run's partial file stays behind for good.
- It accepts any bytes of the right size: a corrupted transfer lands in the cache as if it were fine.

So the bytes are fetched here, through huggingface_hub's own HTTP client (its auth headers, proxy
settings, offline switch, and redirects to the CDN that drop the token), into a partial file with a
*stable* name: ``blobs/<sha256>.incomplete`` (the name huggingface_hub itself used before it went
random), or huggingface_hub's ``.cache/huggingface/download/<hash>.<sha256>.incomplete`` in a
``local_dir``. A later run appends to it from its size with ``Range: bytes=N-``. Partial files that
huggingface_hub left behind are removed while holding its per-file lock (so never one still being
written). A file is hashed before it takes its final name, then linked into ``snapshots/<commit>/``
the way huggingface_hub links it, so ``hf download``, llama.cpp's ``-hf`` and ``hf_hub_download``
share one copy and none of them fetches it again.

huggingface_hub is imported inside functions only: ``nemolaunch --help`` must not pay for it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from nemolaunch import __version__
from nemolaunch.adapters.hardware_probe import existing_ancestor
from nemolaunch.adapters.hub_listing import check_hub_reachable
from nemolaunch.adapters.verify import HashStopped, VerifiedState, check_split_headers, sha256_of_file
from nemolaunch.core.download_plan import (
    DEFAULT_DISK_MARGIN_BYTES,
    ChecksumRefetch,
    DownloadEvent,
    DownloadPlanned,
    FileProgress,
    FileReady,
    FileRetrying,
    FileStarted,
    FileVerified,
    OrphansRemoved,
    PlannedFile,
    RemoteFile,
    UsingCache,
    VerifyProgress,
    WaitingForLock,
    XetFallback,
    check_repo_id,
    check_repo_paths,
    check_split_sets,
    disk_shortfall,
    human_bytes,
    local_parts,
)
from nemolaunch.errors import (
    ChecksumMismatch,
    DownloadFailed,
    DownloadInterrupted,
    FilesMissingOffline,
    GatedRepoNeedsToken,
    GatedRepoNoAccess,
    HubFileNotFound,
    HubListingChanged,
    HubRepoNotFound,
    HubRequestFailed,
    HubRevisionNotFound,
    HubUnreachable,
    NemolaunchError,
    NotEnoughDisk,
    TargetNotWritable,
    first_line,
)

if TYPE_CHECKING:
    import httpx2

ProgressCallback = Callable[[DownloadEvent], None]

_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
# Statuses worth asking again: the server is busy or broken for a moment, not refusing.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Consecutive attempts that bring no new byte before a file is given up (each waits longer).
_MAX_ATTEMPTS_WITHOUT_PROGRESS = 5
_RETRY_WAIT_MAX_S = 30.0
_PROGRESS_EVERY_S = 0.2
_STATE_FILE_NAME = "nemolaunch-verified.json"


@dataclass(frozen=True)
class RepoListing:
    """A repo at one commit: its LFS files (what a quant is made of) and the names of the rest."""

    repo_id: str
    revision: str
    commit: str
    gated: bool
    files: tuple[RemoteFile, ...]
    other_files: tuple[str, ...]

    def find(self, path: str) -> RemoteFile | None:
        return next((remote for remote in self.files if remote.path == path), None)


@dataclass(frozen=True)
class DownloadResult:
    commit: str | None  # None only offline in a local_dir, where no commit is recorded
    files: dict[str, Path]  # repo path -> the path to hand llama.cpp (snapshot link or local_dir file)
    fetched_bytes: int  # written by this run
    offline: bool


# --- listing ----------------------------------------------------------------------------------
def fetch_listing(
    *, repo_id: str, revision: str = "main", token: str | None = None, endpoint: str | None = None
) -> RepoListing:
    """The repo's files at ``revision``, with sizes and LFS sha256, and the commit it resolves to.

    ``token=None`` uses the token huggingface_hub finds (HF_TOKEN, or ``hf auth login``).
    """
    check_repo_id(repo_id)
    from huggingface_hub import HfApi

    hub = _endpoint(endpoint)
    check_hub_reachable(hub)
    resolved_token = _resolve_token(token)
    try:
        info = HfApi(endpoint=hub).model_info(
            repo_id, revision=revision, files_metadata=True, token=resolved_token or False
        )
    except Exception as exc:
        raise _translate(exc, repo_id=repo_id, revision=revision, endpoint=hub, token=resolved_token) from exc
    files: list[RemoteFile] = []
    others: list[str] = []
    for sibling in info.siblings or ():
        if sibling.lfs is not None:
            files.append(RemoteFile(sibling.rfilename, int(sibling.lfs.size), str(sibling.lfs.sha256).lower()))
        else:
            others.append(sibling.rfilename)
    if not info.sha or not _COMMIT_SHA.fullmatch(info.sha):
        # The commit becomes a folder name in the cache: only a real hash may (a mirror could send "../x").
        raise HubRequestFailed(repo_id=repo_id, status=200, reason=f"the listing names no valid commit ({info.sha!r})")
    return RepoListing(
        repo_id=repo_id,
        revision=revision,
        commit=info.sha,
        gated=bool(info.gated),
        files=tuple(files),
        other_files=tuple(others),
    )


# --- download -------------------------------------------------------------------------------
def download_quant(
    *,
    repo_id: str,
    revision: str = "main",
    files: Sequence[RemoteFile | tuple[str, int, str]],
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
    max_workers: int = 4,
    stall_timeout_s: float = 60.0,
    progress: ProgressCallback | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    verify: bool = False,
    offline: bool | None = None,
    prefer_xet: bool = False,
    disk_margin_bytes: int = DEFAULT_DISK_MARGIN_BYTES,
    retry_wait_s: float = 1.0,
    listing: RepoListing | None = None,
) -> DownloadResult:
    """Fetch exactly ``files`` of ``repo_id`` at ``revision`` and return where each one is.

    The target is the HF cache (``cache_dir``, default huggingface_hub's) or, with ``local_dir``,
    the layout of ``hf download --local-dir``. Files already there are checked, not fetched; a file
    a killed run left half done resumes from its bytes on disk. Every file is checked against its
    sha256 (``verify=True`` re-hashes files recorded as verified before). ``offline`` (default:
    HF_HUB_OFFLINE) uses only what is on disk, as does an unreachable Hub.

    ``progress`` receives :mod:`nemolaunch.core.download_plan` events, always in the calling thread.
    ``prefer_xet`` fetches through huggingface_hub's Xet transfer where the repo offers it (faster,
    but not resumable after a kill), falling back to plain HTTP on any trouble.
    A transfer that fails or stalls (no byte for ``stall_timeout_s``) is retried from the bytes on
    disk, waiting ``retry_wait_s`` doubled after each attempt that brought nothing new.
    Ctrl-C raises DownloadInterrupted, leaving partial files to resume from.
    ``listing`` (from :func:`fetch_listing` at ``revision``) saves asking the Hub again.
    """
    wanted = [item if isinstance(item, RemoteFile) else RemoteFile(*item) for item in files]
    check_repo_id(repo_id)
    check_repo_paths(repo_id, wanted)
    check_split_sets((remote.path for remote in wanted), where="the requested files")
    from huggingface_hub import constants

    emit = progress or (lambda event: None)
    hub = _endpoint(endpoint)
    resolved_token = _resolve_token(token)
    stop = threading.Event()
    try:
        is_offline = constants.is_offline_mode() if offline is None else offline
        offline_reason = "HF_HUB_OFFLINE is set" if is_offline else None
        if offline_reason is None and listing is None:  # a caller that listed already passes it in
            try:
                listing = fetch_listing(repo_id=repo_id, revision=revision, token=resolved_token, endpoint=hub)
            except HubUnreachable as exc:
                offline_reason = f"the Hub at {hub} is unreachable: {exc.data['reason']}"
        layout = _make_layout(repo_id, cache_dir=cache_dir, local_dir=local_dir)
        if listing is None:
            assert offline_reason is not None
            return _from_disk_only(
                repo_id, revision, wanted, layout, offline_reason, emit, stop, max_workers=max_workers, verify=verify
            )
        _check_against_listing(wanted, listing)
        if listing.gated:
            _check_gated_access(listing, wanted[0] if wanted else None, hub, resolved_token)
        layout.commit = listing.commit
        run = _Run(
            repo_id=repo_id,
            layout=layout,
            endpoint=hub,
            token=resolved_token,
            stall_timeout_s=stall_timeout_s,
            retry_wait_s=retry_wait_s,
            verify=verify,
            prefer_xet=prefer_xet,
            stop=stop,
        )
        planned = _plan(wanted, layout)
        _check_disk(planned, layout, disk_margin_bytes)
        emit(
            DownloadPlanned(
                commit=listing.commit,
                target=str(layout.root),
                files=tuple(planned),
                total_bytes=sum(p.size for p in planned),
                on_disk_bytes=sum(p.on_disk for p in planned),
            )
        )
        local_paths = _run_parallel(
            [lambda remote=remote: run.materialize(remote) for remote in wanted],
            max_workers=max_workers,
            emit=emit,
            stop=stop,
            sink=run,
        )
        result = dict(zip((remote.path for remote in wanted), local_paths, strict=True))
        layout.record_ref(revision, listing.commit)
        check_split_headers(result.items())
        return DownloadResult(commit=listing.commit, files=result, fetched_bytes=run.fetched_bytes, offline=False)
    except KeyboardInterrupt:
        stop.set()
        layout_for_count = _make_layout(repo_id, cache_dir=cache_dir, local_dir=local_dir)
        on_disk = sum(p.on_disk for p in _plan(wanted, layout_for_count))
        raise DownloadInterrupted(
            on_disk=human_bytes(on_disk), total=human_bytes(sum(r.size for r in wanted))
        ) from None
    finally:
        stop.set()  # whatever ended the call (an error, a failing progress callback), workers stop too


# --- checks before the first byte -----------------------------------------------------------------
def _check_against_listing(wanted: list[RemoteFile], listing: RepoListing) -> None:
    for remote in wanted:
        listed = listing.find(remote.path)
        if listed is None:
            raise HubFileNotFound(
                repo_id=listing.repo_id,
                revision=listing.revision,
                path=remote.path,
                available=_names_near(remote.path, listing),
            )
        if (listed.size, listed.sha256) != (remote.size, remote.sha256):
            raise HubListingChanged(
                repo_id=listing.repo_id,
                path=remote.path,
                expected=f"{remote.size} bytes, sha256 {remote.sha256[:12]}",
                listed=f"{listed.size} bytes, sha256 {listed.sha256[:12]}",
            )


def _names_near(path: str, listing: RepoListing) -> list[str]:
    """What exists where ``path`` was expected: its folder's files, else the repo's top-level entries."""
    folder = path.rpartition("/")[0]
    names = [remote.path for remote in listing.files if remote.path.rpartition("/")[0] == folder]
    if folder and not names:
        names = sorted({remote.path.split("/")[0] for remote in listing.files})
    return sorted(names) or sorted(listing.other_files)


def _check_gated_access(listing: RepoListing, probe: RemoteFile | None, endpoint: str, token: str | None) -> None:
    url = f"{endpoint}/{listing.repo_id}"
    if token is None:
        raise GatedRepoNeedsToken(repo_id=listing.repo_id, url=url)
    if probe is None:
        return
    from huggingface_hub import get_hf_file_metadata

    # A token may lack access (terms not accepted): ask for one file's metadata before any byte.
    try:
        get_hf_file_metadata(_resolve_url(endpoint, listing.repo_id, listing.commit, probe.path), token=token)
    except Exception as exc:
        raise _translate(
            exc, repo_id=listing.repo_id, revision=listing.revision, endpoint=endpoint, token=token, path=probe.path
        ) from exc


def _plan(wanted: list[RemoteFile], layout: _Layout) -> list[PlannedFile]:
    planned = []
    for remote in wanted:
        if layout.complete_file(remote) is not None:
            planned.append(PlannedFile(remote.path, remote.size, remote.size, "complete"))
            continue
        partial = layout.partial_size(remote)
        if 0 < partial <= remote.size:
            planned.append(PlannedFile(remote.path, remote.size, partial, "partial"))
        else:
            planned.append(PlannedFile(remote.path, remote.size, 0, "missing"))
    return planned


def _check_disk(planned: list[PlannedFile], layout: _Layout, margin_bytes: int) -> None:
    needed = sum(p.size - p.on_disk for p in planned if p.state != "complete")
    probe = existing_ancestor(layout.root) or Path(layout.root.anchor or "/")
    # Partial files huggingface_hub left behind are deleted before their file is fetched.
    reclaimable = sum(_size_or_zero(orphan) for orphan in layout.all_orphans())
    free = shutil.disk_usage(probe).free + reclaimable
    missing = disk_shortfall(needed_bytes=needed, free_bytes=free, margin_bytes=margin_bytes)
    if missing:
        raise NotEnoughDisk(
            target=str(probe),
            needed=human_bytes(needed),
            free=human_bytes(free),
            missing=human_bytes(missing),
            margin=human_bytes(margin_bytes),
            needed_bytes=needed,
            free_bytes=free,
        )


# --- offline ------------------------------------------------------------------------------------
def _from_disk_only(
    repo_id: str,
    revision: str,
    wanted: list[RemoteFile],
    layout: _Layout,
    reason: str,
    emit: ProgressCallback,
    stop: threading.Event,
    *,
    max_workers: int,
    verify: bool,
) -> DownloadResult:
    emit(UsingCache(reason=reason))
    layout.commit = revision if _COMMIT_SHA.fullmatch(revision) else layout.read_ref(revision)
    missing = []
    for remote in wanted:
        final = layout.final_path(remote)
        if final is None or _size_or_zero(final) != remote.size:
            partial = layout.partial_size(remote)
            detail = f" ({human_bytes(partial)} of {human_bytes(remote.size)} on disk)" if partial else ""
            missing.append(remote.path + detail)
    if missing:
        raise FilesMissingOffline(repo_id=repo_id, reason=reason, missing=missing, target=str(layout.root))
    run = _Run(
        repo_id=repo_id,
        layout=layout,
        endpoint="",
        token=None,
        stall_timeout_s=0,
        retry_wait_s=0,
        verify=verify,
        prefer_xet=False,
        stop=stop,
    )
    local_paths = _run_parallel(
        [lambda remote=remote: run.check_offline(remote) for remote in wanted],
        max_workers=max_workers,
        emit=emit,
        stop=stop,
        sink=run,
    )
    result = dict(zip((remote.path for remote in wanted), local_paths, strict=True))
    check_split_headers(result.items())
    return DownloadResult(commit=layout.commit, files=result, fetched_bytes=0, offline=True)


# --- one download run: per-file work, in worker threads ---------------------------------------------
class _StreamDigest:
    """A sha256 that knows how many bytes it has taken in."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self.count = 0

    def update(self, data: bytes) -> None:
        self._sha256.update(data)
        self.count += len(data)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


class _Stopped(Exception):
    """Ctrl-C was pressed: a worker leaves its partial file as it is."""


class _Run:
    """Settings and shared state of one download_quant call; its methods run in worker threads.

    Workers never call the progress callback: they hand events to ``self.emit``, which the main
    thread's loop delivers.
    """

    def __init__(
        self,
        *,
        repo_id: str,
        layout: _Layout,
        endpoint: str,
        token: str | None,
        stall_timeout_s: float,
        retry_wait_s: float,
        verify: bool,
        prefer_xet: bool,
        stop: threading.Event,
    ) -> None:
        self.repo_id = repo_id
        self.layout = layout
        self.endpoint = endpoint
        self.token = token
        self.stall_timeout_s = stall_timeout_s
        self.retry_wait_s = retry_wait_s
        self.verify = verify
        self.prefer_xet = prefer_xet
        self.stop = stop
        self.emit: Callable[[DownloadEvent], None] = lambda event: None  # set by _run_parallel
        self.state = VerifiedState.load(layout.state_path, layout.state_root)
        self.fetched_bytes = 0
        self._lock = threading.Lock()
        # sha256 of each partial file's bytes as they were written, so a finished download needs
        # no second read of 50 GB shards (a resumed one hashes only the prefix it found on disk).
        self._stream_digests: dict[str, _StreamDigest] = {}

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
            raise _Stopped from None

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
            self._stream_into(remote, partial)
            actual = self._hash_and_sync_partial(remote, partial)
            if actual != remote.sha256:
                partial.unlink(missing_ok=True)
                return actual
            data = self.layout.data_path(remote)
            data.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, data)  # same folder tree, same filesystem: atomic
            self._record(data, actual)
            return actual

    def _digest_of_prefix(self, remote: RemoteFile, partial: Path, have: int) -> _StreamDigest:
        """The running sha256 of ``partial``'s first ``have`` bytes, hashing from disk only what it lacks."""
        digest = self._stream_digests.get(remote.path)
        if digest is None or digest.count != have:
            digest = _StreamDigest()
            if have:
                with partial.open("rb") as handle:
                    for block in iter(lambda: handle.read(min(1 << 20, have - digest.count)), b""):
                        digest.update(block)
                        if digest.count == have:
                            break
            self._stream_digests[remote.path] = digest
        return digest

    def _hash_and_sync_partial(self, remote: RemoteFile, partial: Path) -> str:
        digest = self._stream_digests.pop(remote.path, None)
        if digest is not None and digest.count == remote.size == _size_or_zero(partial):
            actual = digest.hexdigest()
            self.emit(VerifyProgress(remote.path, remote.size, remote.size))
        else:
            actual = self._hash(remote, partial)
        if actual == remote.sha256:
            # Make the bytes durable before the rename publishes them under the final name.
            with partial.open("rb") as handle:
                os.fsync(handle.fileno())
            self.emit(FileVerified(path=remote.path, from_record=False))
        return actual

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
            size = _size_or_zero(orphan)
            with contextlib.suppress(FileNotFoundError):
                orphan.unlink()
                removed.append(str(orphan))
                freed += size
        if removed:
            self.emit(OrphansRemoved(paths=tuple(removed), nbytes=freed))

    def _stream_into(self, remote: RemoteFile, partial: Path) -> None:
        """Append the missing tail of ``remote`` to ``partial`` until it is whole, retrying what can be retried."""
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        url = _resolve_url(self.endpoint, self.repo_id, self.layout.require_commit(), remote.path)
        failures = 0
        attempts = 0
        while True:
            if self.stop.is_set():
                raise _Stopped
            have = _size_or_zero(partial)
            if have > remote.size:  # longer than the file: not a prefix of it
                partial.write_bytes(b"")
                have = 0
            if have == remote.size:
                return
            if attempts == 0:
                self.emit(FileStarted(path=remote.path, size=remote.size, resume_from=have))
            attempts += 1
            try:
                self._one_request(remote, url, partial, have)
                reason = "the server ended the transfer early"
            except httpx2.TimeoutException:
                reason = f"no bytes for {self.stall_timeout_s:g} s"
            except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                reason = f"connection lost: {first_line(exc)}"
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status == 416:  # the server will not serve from our offset: what we hold is not usable
                    partial.write_bytes(b"")
                elif status not in _RETRY_STATUSES:
                    raise _translate(
                        exc,
                        repo_id=self.repo_id,
                        revision=self.layout.commit,
                        endpoint=self.endpoint,
                        token=self.token,
                        path=remote.path,
                    ) from exc
                reason = f"the server answered {status}"
            except httpx2.RequestError as exc:  # a proxy refusing, a redirect loop: asking again will not help
                raise _translate(
                    exc, repo_id=self.repo_id, revision=self.layout.commit, endpoint=self.endpoint, token=self.token
                ) from exc
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _disk_full(partial, remote) from exc
                raise TargetNotWritable(path=str(partial), reason=exc.strerror or first_line(exc)) from exc
            now = _size_or_zero(partial)
            if now == remote.size:
                return
            failures = 0 if now > have else failures + 1
            if failures >= _MAX_ATTEMPTS_WITHOUT_PROGRESS:
                raise DownloadFailed(path=remote.path, attempts=attempts, reason=reason)
            wait_s = min(_RETRY_WAIT_MAX_S, self.retry_wait_s * 2**failures)
            self.emit(
                FileRetrying(path=remote.path, attempt=attempts + 1, reason=reason, resume_from=now, wait_s=wait_s)
            )
            if self.stop.wait(wait_s):
                raise _Stopped

    def _one_request(self, remote: RemoteFile, url: str, partial: Path, have: int) -> None:
        import httpx2
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        headers = build_hf_headers(token=self.token or False, library_name="nemolaunch", library_version=__version__)
        headers["Accept-Encoding"] = "identity"  # sizes and offsets are of the file itself
        if have:
            headers["Range"] = f"bytes={have}-"
        # The read timeout is the stall detector: it fires when no byte arrives for that long.
        timeout = httpx2.Timeout(self.stall_timeout_s, connect=min(self.stall_timeout_s, 30.0))
        with get_session().stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            if have and not _range_starts_at(response, have):
                # The server ignored the Range (or answered another one): start over, never splice.
                have = 0
            digest = self._digest_of_prefix(remote, partial, have)
            with partial.open("ab" if have else "wb") as out:
                last_report = 0.0
                for chunk in response.iter_bytes():
                    if self.stop.is_set():
                        raise _Stopped
                    out.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    with self._lock:
                        self.fetched_bytes += len(chunk)
                    if have > remote.size:
                        raise httpx2.RemoteProtocolError(f"the server sent more than {remote.size} bytes")
                    now = time.monotonic()
                    if now - last_report >= _PROGRESS_EVERY_S:
                        self.emit(FileProgress(path=remote.path, done=have, size=remote.size))
                        last_report = now
            self.emit(FileProgress(path=remote.path, done=have, size=remote.size))

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
        url = _resolve_url(self.endpoint, self.repo_id, self.layout.require_commit(), remote.path)
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
def _run_parallel(
    jobs: list[Callable[[], Path]],
    *,
    max_workers: int,
    emit: ProgressCallback,
    stop: threading.Event,
    sink: _Run,
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
            except _Stopped:
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


# --- where files live: the HF cache, or a local_dir -------------------------------------------------
class _Layout(Protocol):
    root: Path  # shown to people; where free space is measured
    state_root: Path
    state_path: Path
    commit: str | None

    def require_commit(self) -> str: ...
    def complete_file(self, remote: RemoteFile) -> Path | None: ...
    def data_path(self, remote: RemoteFile) -> Path: ...
    def partial_path(self, remote: RemoteFile) -> Path: ...
    def partial_size(self, remote: RemoteFile) -> int: ...
    def lock_path(self, remote: RemoteFile) -> Path: ...
    def orphans(self, remote: RemoteFile) -> list[Path]: ...
    def all_orphans(self) -> list[Path]: ...
    def final_path(self, remote: RemoteFile) -> Path | None: ...
    def finish(self, remote: RemoteFile, *, token: str | None, endpoint: str) -> Path: ...
    def discard(self, remote: RemoteFile) -> None: ...
    def read_ref(self, revision: str) -> str | None: ...
    def record_ref(self, revision: str, commit: str) -> None: ...
    def hf_target(self) -> dict[str, Any]: ...


def _make_layout(repo_id: str, *, cache_dir: Path | None, local_dir: Path | None) -> _Layout:
    if local_dir is not None:
        return _LocalDirLayout(Path(local_dir).expanduser().absolute())
    from huggingface_hub import constants

    base = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser().absolute()
    return _CacheLayout(base, repo_id)


class _CacheLayout:
    """huggingface_hub's cache: ``blobs/<sha256>``, linked from ``snapshots/<commit>/<path>``."""

    def __init__(self, cache_dir: Path, repo_id: str) -> None:
        self.cache_dir = cache_dir
        self.folder_name = "models--" + repo_id.replace("/", "--")
        self.root = cache_dir / self.folder_name
        self.state_root = self.root
        # Inside the repo's folder: `hf cache delete` removes the records with the files.
        self.state_path = self.root / _STATE_FILE_NAME
        self.commit: str | None = None

    def require_commit(self) -> str:
        assert self.commit is not None, "the commit is resolved before any file is fetched"
        return self.commit

    def data_path(self, remote: RemoteFile) -> Path:
        return self.root / "blobs" / remote.sha256

    def complete_file(self, remote: RemoteFile) -> Path | None:
        blob = self.data_path(remote)
        return blob if _size_or_zero(blob) == remote.size else None

    def partial_path(self, remote: RemoteFile) -> Path:
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        return self.root / "blobs" / f"{remote.sha256}.incomplete"

    def partial_size(self, remote: RemoteFile) -> int:
        return _size_or_zero(self.root / "blobs" / f"{remote.sha256}.incomplete")

    def lock_path(self, remote: RemoteFile) -> Path:
        return self.cache_dir / ".locks" / self.folder_name / f"{remote.sha256}.lock"

    def orphans(self, remote: RemoteFile) -> list[Path]:
        pattern = re.compile(re.escape(remote.sha256) + r"\.[0-9a-f]{8}\.incomplete$")
        return [p for p in _list_dir(self.root / "blobs") if pattern.fullmatch(p.name)]

    def all_orphans(self) -> list[Path]:
        pattern = re.compile(r"[0-9a-f]{40,64}\.[0-9a-f]{8}\.incomplete$")
        return [p for p in _list_dir(self.root / "blobs") if pattern.fullmatch(p.name)]

    def final_path(self, remote: RemoteFile) -> Path | None:
        if self.commit is None:
            return None
        return self.root.joinpath("snapshots", self.commit, *local_parts(remote.path))

    def finish(self, remote: RemoteFile, *, token: str | None, endpoint: str) -> Path:
        pointer = self.final_path(remote)
        assert pointer is not None
        blob = self.data_path(remote)
        if os.path.realpath(pointer) == os.path.realpath(blob):
            return pointer
        pointer.parent.mkdir(parents=True, exist_ok=True)
        # The link huggingface_hub makes: relative, so the cache folder can move.
        temporary = pointer.with_name(f".{pointer.name}.nemolaunch-link")
        try:
            temporary.unlink(missing_ok=True)
            os.symlink(os.path.relpath(blob, pointer.parent), temporary)
            os.replace(temporary, pointer)
        except OSError:
            # No symlinks here (some Windows setups): let huggingface_hub place the file its way.
            temporary.unlink(missing_ok=True)
            from huggingface_hub import hf_hub_download

            return Path(
                hf_hub_download(
                    self.folder_name[len("models--") :].replace("--", "/", 1),
                    remote.path,
                    revision=self.require_commit(),
                    cache_dir=self.cache_dir,
                    token=token or False,
                    endpoint=endpoint,
                )
            )
        return pointer

    def discard(self, remote: RemoteFile) -> None:
        self.data_path(remote).unlink(missing_ok=True)

    def read_ref(self, revision: str) -> str | None:
        try:
            text = (self.root / "refs" / revision).read_text().strip()
        except OSError:
            return None
        return text if _COMMIT_SHA.fullmatch(text) else None

    def record_ref(self, revision: str, commit: str) -> None:
        """``refs/<branch>`` holds the commit, as huggingface_hub writes it, so offline runs find it."""
        if revision == commit or self.read_ref(revision) == commit:
            return
        ref = self.root / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        temporary = ref.with_name(f".{ref.name}.nemolaunch")
        temporary.write_text(commit)
        os.replace(temporary, ref)

    def hf_target(self) -> dict[str, Any]:
        return {"cache_dir": self.cache_dir}


class _LocalDirLayout:
    """``hf download --local-dir``: the files under their repo paths, metadata in ``.cache/huggingface``."""

    def __init__(self, local_dir: Path) -> None:
        self.root = local_dir
        self.state_root = local_dir
        self.state_path = local_dir / ".cache" / "huggingface" / _STATE_FILE_NAME
        self.commit: str | None = None

    def require_commit(self) -> str:
        assert self.commit is not None, "the commit is resolved before any file is fetched"
        return self.commit

    def data_path(self, remote: RemoteFile) -> Path:
        return self.root.joinpath(*local_parts(remote.path))

    def complete_file(self, remote: RemoteFile) -> Path | None:
        path = self.data_path(remote)
        return path if _size_or_zero(path) == remote.size else None

    def _download_folder(self, remote: RemoteFile) -> Path:
        return self.root.joinpath(".cache", "huggingface", "download", *local_parts(remote.path)[:-1])

    def partial_path(self, remote: RemoteFile) -> Path:
        # huggingface_hub's naming (and folder creation), so its own partial files sit beside ours.
        from huggingface_hub._local_folder import get_local_download_paths

        return get_local_download_paths(self.root, remote.path).incomplete_path(remote.sha256)

    def partial_size(self, remote: RemoteFile) -> int:
        # Found by pattern rather than computed, so that merely looking creates no folders.
        ours = re.compile(r"[A-Za-z0-9_=-]+\." + re.escape(remote.sha256) + r"\.incomplete$")
        sizes = [_size_or_zero(p) for p in _list_dir(self._download_folder(remote)) if ours.fullmatch(p.name)]
        return max(sizes, default=0)

    def lock_path(self, remote: RemoteFile) -> Path:
        from huggingface_hub._local_folder import get_local_download_paths

        return get_local_download_paths(self.root, remote.path).lock_path

    def orphans(self, remote: RemoteFile) -> list[Path]:
        pattern = re.compile(r"[A-Za-z0-9_=-]+\." + re.escape(remote.sha256) + r"\.[0-9a-f]{8}\.incomplete$")
        return [p for p in _list_dir(self._download_folder(remote)) if pattern.fullmatch(p.name)]

    def all_orphans(self) -> list[Path]:
        return []  # scattered over the folder tree; each file's are removed before it is fetched

    def final_path(self, remote: RemoteFile) -> Path | None:
        return self.data_path(remote)

    def finish(self, remote: RemoteFile, *, token: str | None, endpoint: str) -> Path:
        if self.commit is not None:
            # Metadata as `hf download --local-dir` writes it: without it, huggingface_hub would re-hash
            # the whole file the next time it is asked for it.
            from huggingface_hub._local_folder import write_download_metadata

            write_download_metadata(self.root, remote.path, self.commit, remote.sha256)
        return self.data_path(remote)

    def discard(self, remote: RemoteFile) -> None:
        self.data_path(remote).unlink(missing_ok=True)

    def read_ref(self, revision: str) -> str | None:
        return None

    def record_ref(self, revision: str, commit: str) -> None:
        return None

    def hf_target(self) -> dict[str, Any]:
        return {"local_dir": self.root}


# --- small helpers ------------------------------------------------------------------------------------
def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def _resolve_token(token: str | None) -> str | None:
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def _resolve_url(endpoint: str, repo_id: str, commit: str, path: str) -> str:
    # Pinned to the commit, so every file comes from the same upload even if the branch moves meanwhile.
    return f"{endpoint}/{repo_id}/resolve/{quote(commit, safe='')}/{quote(path)}"


def _range_starts_at(response: httpx2.Response, offset: int) -> bool:
    if response.status_code != 206:
        return False
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return match is not None and int(match[1]) == offset


def _translate(
    exc: Exception, *, repo_id: str, revision: str | None, endpoint: str, token: str | None, path: str = "?"
) -> NemolaunchError:
    """huggingface_hub's and httpx's errors, as the one-line errors nemolaunch reports."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, NemolaunchError):
        return exc
    if isinstance(exc, GatedRepoError):  # before RepositoryNotFoundError, its parent class
        url = f"{endpoint}/{repo_id}"
        return GatedRepoNoAccess(repo_id=repo_id, url=url) if token else GatedRepoNeedsToken(repo_id=repo_id, url=url)
    if isinstance(exc, RepositoryNotFoundError):
        return HubRepoNotFound(repo_id=repo_id, endpoint=endpoint)
    if isinstance(exc, RevisionNotFoundError):
        return HubRevisionNotFound(repo_id=repo_id, revision=revision)
    if isinstance(exc, RemoteEntryNotFoundError):
        # Only asked for files the listing named: the file went away since.
        return HubListingChanged(repo_id=repo_id, path=path, expected="a file", listed="none")
    if isinstance(exc, (OfflineModeIsEnabled, httpx2.RequestError)):
        return HubUnreachable(endpoint=endpoint, reason=first_line(exc))
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        return HubRequestFailed(repo_id=repo_id, status=status, reason=first_line(exc))
    # Anything else the Hub client raised: still one line, never the exception as its own cause.
    return HubRequestFailed(repo_id=repo_id, status="an error", reason=first_line(exc))


def _disk_full(partial: Path, remote: RemoteFile) -> NotEnoughDisk:
    free = shutil.disk_usage(partial.parent).free
    needed = remote.size - _size_or_zero(partial)
    return NotEnoughDisk(
        target=str(partial.parent),
        needed=human_bytes(needed),
        free=human_bytes(free),
        missing=human_bytes(max(0, needed - free)),
        margin=human_bytes(0),
        needed_bytes=needed,
        free_bytes=free,
    )


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _list_dir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []

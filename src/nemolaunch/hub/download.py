"""Download a quant's files from the Hugging Face Hub, resumably, into the cache huggingface_hub uses.

What huggingface_hub 2.4.0 does on its own (observed against ``tests/fakehub.py``):

- ``hf_hub_download`` streams each file into ``blobs/<etag>.<8 random hex>.incomplete`` and renames it
  to ``blobs/<etag>`` when done. A dropped connection is resumed within the process (``Range``, in
  10 MiB steps), but after the process is killed the next run starts that file from zero under a new
  random name, and the killed run's partial file stays behind for good.
- It accepts any bytes of the right size: a corrupted transfer lands in the cache as if it were fine.
- It fetches each file over one connection, which a CDN edge caps.

So the bytes are fetched here (:mod:`segmented_fetch`: several ranged connections per file, asked of the
CDN the Hub redirects to) into a partial file with a *stable* name: ``blobs/<sha256>.incomplete`` (the
name huggingface_hub itself used before it went random), or huggingface_hub's
``.cache/huggingface/download/<hash>.<sha256>.incomplete`` in a ``local_dir``; a sidecar records which
bytes of it are written (:mod:`partial_state`), so a killed run resumes. Partial files that
huggingface_hub left behind are removed while holding its per-file lock (so never one still being
written). A file is hashed before it takes its final name, then linked into ``snapshots/<commit>/``
the way huggingface_hub links it, so ``hf download``, llama.cpp's ``-hf`` and ``hf_hub_download``
share one copy and none of them fetches it again.

This module plans a call and checks what can be checked before the first byte; :mod:`transfer` does
the per-file work, :mod:`layout` knows where files live.
huggingface_hub is imported inside functions only: ``nemolaunch --help`` must not pay for it.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nemolaunch.adapters.hardware_probe import existing_ancestor
from nemolaunch.core.download_plan import (
    DEFAULT_DISK_MARGIN_BYTES,
    DownloadEvent,
    DownloadPlanned,
    PlannedFile,
    RemoteFile,
    UsingCache,
    check_repo_id,
    check_repo_paths,
    check_split_sets,
    disk_shortfall,
    human_bytes,
)
from nemolaunch.errors import (
    DownloadInterrupted,
    FilesMissingOffline,
    GatedRepoNeedsToken,
    HubFileNotFound,
    HubListingChanged,
    HubUnreachable,
    NotEnoughDisk,
)
from nemolaunch.hub.api import resolve_url, translate
from nemolaunch.hub.deadline import DEFAULT_HUB_DEADLINE_S
from nemolaunch.hub.layout import COMMIT_SHA, Layout, make_layout, size_or_zero
from nemolaunch.hub.listing import RepoListing, fetch_listing, hub_endpoint, resolve_token
from nemolaunch.hub.transfer import Run, run_parallel
from nemolaunch.hub.verify import check_split_headers

ProgressCallback = Callable[[DownloadEvent], None]

# The most connections at once, all files together (the run starts with 4 and doubles while doubling
# pays: see connection_budget). Measured (benchmarks/download_vs_curl.py): against a hub that caps each
# connection, throughput grows with them (1 GB in 4 shards at 40 MB/s a connection: 2.8 s with 16,
# 2.0 s with 32, driver alone); against an uncapped one on 2 cores, 4 are fastest.
DEFAULT_CONNECTIONS = 32


@dataclass(frozen=True)
class DownloadResult:
    commit: str | None  # None only offline in a local_dir, where no commit is recorded
    files: dict[str, Path]  # repo path -> the path to hand llama.cpp (snapshot link or local_dir file)
    fetched_bytes: int  # written by this run
    offline: bool


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
    deadline_s: float = DEFAULT_HUB_DEADLINE_S,
    progress: ProgressCallback | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    verify: bool = False,
    offline: bool | None = None,
    prefer_xet: bool = False,
    disk_margin_bytes: int = DEFAULT_DISK_MARGIN_BYTES,
    retry_wait_s: float = 1.0,
    listing: RepoListing | None = None,
    connections: int = DEFAULT_CONNECTIONS,
    piece_bytes: int | None = None,
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
    The listing (when none is passed in) must come within ``deadline_s``.
    A transfer that fails or stalls (no byte for ``stall_timeout_s``) is retried from the bytes on
    disk, waiting ``retry_wait_s`` doubled after each attempt that brought nothing new.
    Ctrl-C raises DownloadInterrupted, leaving partial files to resume from.
    ``listing`` (from ``listing.fetch_listing`` at ``revision``) saves asking the Hub again.
    At most ``connections`` HTTP connections carry bytes at once, all files together; each file is
    fetched in ranges of ``piece_bytes`` (default: sized for the connections it will likely get), over
    as many of them as it has ranges left.
    """
    wanted = [item if isinstance(item, RemoteFile) else RemoteFile(*item) for item in files]
    check_repo_id(repo_id)
    check_repo_paths(repo_id, wanted)
    check_split_sets((remote.path for remote in wanted), where="the requested files")
    from huggingface_hub import constants

    emit = progress or (lambda event: None)
    hub = hub_endpoint(endpoint)
    resolved_token = resolve_token(token)
    stop = threading.Event()
    try:
        is_offline = constants.is_offline_mode() if offline is None else offline
        offline_reason = "HF_HUB_OFFLINE is set" if is_offline else None
        if offline_reason is None and listing is None:  # a caller that listed already passes it in
            try:
                listing = fetch_listing(
                    repo_id=repo_id, revision=revision, token=resolved_token, endpoint=hub, deadline_s=deadline_s
                )
            except HubUnreachable as exc:
                offline_reason = f"the Hub at {hub} is unreachable: {exc.data['reason']}"
        layout = make_layout(repo_id, cache_dir=cache_dir, local_dir=local_dir)
        if listing is None:
            assert offline_reason is not None
            return _from_disk_only(
                repo_id, revision, wanted, layout, offline_reason, emit, stop, max_workers=max_workers, verify=verify
            )
        _check_against_listing(wanted, listing)
        if listing.gated:
            _check_gated_access(listing, wanted[0] if wanted else None, hub, resolved_token)
        layout.commit = listing.commit
        run = Run(
            repo_id=repo_id,
            layout=layout,
            endpoint=hub,
            token=resolved_token,
            stall_timeout_s=stall_timeout_s,
            retry_wait_s=retry_wait_s,
            connections=connections,
            piece_bytes=piece_bytes,
            files_at_once=min(max_workers, len(wanted)),
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
        try:
            local_paths = run_parallel(
                [lambda remote=remote: _materialize_checked(run, remote) for remote in wanted],
                max_workers=max_workers,
                emit=emit,
                stop=stop,
                sink=run,
            )
        except NotEnoughDisk:
            # The disk filled under a shard: that shard's remainder is not what is missing, the quant's is
            # (what the next run's check will ask for).
            _check_disk(_plan(wanted, layout), layout, disk_margin_bytes)
            raise
        result = dict(zip((remote.path for remote in wanted), local_paths, strict=True))
        layout.record_ref(revision, listing.commit)
        return DownloadResult(commit=listing.commit, files=result, fetched_bytes=run.fetched_bytes, offline=False)
    except KeyboardInterrupt:
        stop.set()
        layout_for_count = make_layout(repo_id, cache_dir=cache_dir, local_dir=local_dir)
        on_disk = sum(p.on_disk for p in _plan(wanted, layout_for_count))
        raise DownloadInterrupted(
            on_disk=human_bytes(on_disk), total=human_bytes(sum(r.size for r in wanted))
        ) from None
    finally:
        stop.set()  # whatever ended the call (an error, a failing progress callback), workers stop too


def _materialize_checked(run: Run, remote: RemoteFile) -> Path:
    """One file fetched (or found) whole, then its GGUF header's split count checked, in the worker's
    thread: a header is read while other files still arrive, not after the last one."""
    path = run.materialize(remote)
    check_split_headers([(remote.path, path)])
    return path


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
    return sorted(names) or sorted(entry.path for entry in listing.other_files)


def _check_gated_access(listing: RepoListing, probe: RemoteFile | None, endpoint: str, token: str | None) -> None:
    url = f"{endpoint}/{listing.repo_id}"
    if token is None:
        raise GatedRepoNeedsToken(repo_id=listing.repo_id, url=url)
    if probe is None:
        return
    from huggingface_hub import get_hf_file_metadata

    # A token may lack access (terms not accepted): ask for one file's metadata before any byte.
    try:
        get_hf_file_metadata(resolve_url(endpoint, listing.repo_id, listing.commit, probe.path), token=token)
    except Exception as exc:
        raise translate(
            exc, repo_id=listing.repo_id, revision=listing.revision, endpoint=endpoint, token=token, path=probe.path
        ) from exc


def _plan(wanted: list[RemoteFile], layout: Layout) -> list[PlannedFile]:
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


def _check_disk(planned: list[PlannedFile], layout: Layout, margin_bytes: int) -> None:
    needed = sum(p.size - p.on_disk for p in planned if p.state != "complete")
    probe = existing_ancestor(layout.root) or Path(layout.root.anchor or "/")
    # Partial files huggingface_hub left behind are deleted before their file is fetched.
    reclaimable = sum(size_or_zero(orphan) for orphan in layout.all_orphans())
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
    layout: Layout,
    reason: str,
    emit: ProgressCallback,
    stop: threading.Event,
    *,
    max_workers: int,
    verify: bool,
) -> DownloadResult:
    emit(UsingCache(reason=reason))
    layout.commit = revision if COMMIT_SHA.fullmatch(revision) else layout.read_ref(revision)
    missing = []
    for remote in wanted:
        final = layout.final_path(remote)
        if final is None or size_or_zero(final) != remote.size:
            partial = layout.partial_size(remote)
            detail = f" ({human_bytes(partial)} of {human_bytes(remote.size)} on disk)" if partial else ""
            missing.append(remote.path + detail)
    if missing:
        raise FilesMissingOffline(repo_id=repo_id, reason=reason, missing=missing, target=str(layout.root))
    run = Run(
        repo_id=repo_id,
        layout=layout,
        endpoint="",
        token=None,
        stall_timeout_s=0,
        retry_wait_s=0,
        connections=1,
        piece_bytes=None,
        files_at_once=1,
        verify=verify,
        prefer_xet=False,
        stop=stop,
    )
    local_paths = run_parallel(
        [lambda remote=remote: run.check_offline(remote) for remote in wanted],
        max_workers=max_workers,
        emit=emit,
        stop=stop,
        sink=run,
    )
    result = dict(zip((remote.path for remote in wanted), local_paths, strict=True))
    check_split_headers(result.items())
    return DownloadResult(commit=layout.commit, files=result, fetched_bytes=0, offline=True)

"""The pure parts of downloading a quant: which names are safe, what is missing, what fits.

Nothing here touches the disk or the network: the adapter measures (file sizes, free space) and
asks these functions what the numbers mean. The events a download reports are defined here too,
so the CLI can render them without importing the adapter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from nemolaunch.core.split_names import SplitName, parse_split_name
from nemolaunch.errors import HubListingInvalid, SplitSetIncomplete, UnsafeRepoId, UnsafeRepoPath

#: Free space left on the target after a download: a full disk breaks the cache
#: (lock files, refs) and everything else on the machine.
DEFAULT_DISK_MARGIN_BYTES = 2 * 1024**3

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The longest file name (one path segment) Linux, macOS and Windows file systems take, in bytes.
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a commit: its repo path, size in bytes and LFS sha256 (lowercase hex)."""

    path: str
    size: int
    sha256: str


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but ``owner/name``: the id becomes a folder name in the cache."""
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise UnsafeRepoId(repo_id=repo_id)


def unsafe_path_reason(path: str) -> str | None:
    """Why a repo file name must not become a local path, or None when it is a plain relative path.

    A name from the Hub is data, not a path: it is joined under the target folder only when
    every segment is an ordinary name, so nothing can land outside that folder.
    """
    if not path:
        return "it is empty"
    if any(ord(char) < 0x20 or char == "\x7f" for char in path):
        return "it holds control characters"
    if "\\" in path:
        return "it holds a backslash"
    if path.startswith("/"):
        return "it is absolute"
    if ":" in path:
        return "it holds a ':' (a drive or a data stream on Windows)"
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return "it has an empty, '.' or '..' segment"
    if any(segment.endswith((".", " ")) for segment in segments):
        # Windows drops trailing dots and spaces, so "a./" would alias "a/".
        return "a segment ends with a dot or a space"
    if segments[0] == ".cache":
        return "it would land in the folder's .cache, where download state lives"
    longest = max(len(segment.encode("utf-8", "surrogatepass")) for segment in segments)
    if longest > MAX_NAME_BYTES:
        # No file system would take it: the blob would land, and its snapshot link fail.
        return f"a segment is {longest} bytes long, over the {MAX_NAME_BYTES} a file name may have"
    return None


def check_repo_paths(repo_id: str, files: Iterable[RemoteFile]) -> None:
    """Every file a download is asked for: a safe relative path, a real sha256, some bytes."""
    for remote in files:
        check_listed_file(repo_id, path=remote.path, size=remote.size, sha256=remote.sha256)


def check_listed_file(repo_id: str, *, path: str, size: int, sha256: str | None) -> bool:
    """Whether a listed file may be kept: raise for a model file (LFS, or any .gguf) that could not be
    fetched and placed whole, so plan and download refuse the same listing before any request; False
    for another file whose name is unsafe (never fetched, so left out rather than refused).

    ``sha256`` is None for a file the Hub keeps in git rather than LFS.
    """
    model_file = sha256 is not None or path.lower().endswith(".gguf")
    reason = unsafe_path_reason(path)
    if reason is not None:
        if not model_file:
            return False
        raise UnsafeRepoPath(repo_id=repo_id, path=path, reason=reason)
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise UnsafeRepoPath(repo_id=repo_id, path=path, reason="its sha256 is not 64 lowercase hex digits")
    if model_file and size < 1:
        raise HubListingInvalid(repo_id=repo_id, path=path, problem=f"as {size} bytes, which no model file is")
    return True


def local_parts(path: str) -> tuple[str, ...]:
    """The segments of a checked repo path, to join under a target folder."""
    return PurePosixPath(path).parts


def check_split_sets(paths: Iterable[str], *, where: str) -> None:
    """Every ``-0000K-of-0000N`` file among ``paths`` has all N siblings (same folder and stem)."""
    present: dict[tuple[str, str, int], set[int]] = {}
    for path in paths:
        split = parse_split_name(path)
        if split is not None:
            present.setdefault((split.folder, split.stem, split.count), set()).add(split.index)
    for (folder, stem, count), indices in sorted(present.items()):
        missing = [i for i in range(1, count + 1) if i not in indices]
        if missing:
            prefix = f"{folder}/" if folder else ""
            names = [prefix + SplitName(folder, stem, i, count).name_of(i) for i in missing]
            raise SplitSetIncomplete(where=where, name=prefix + stem, total=count, missing=names)


def disk_shortfall(*, needed_bytes: int, free_bytes: int, margin_bytes: int) -> int:
    """Bytes that must be freed before ``needed_bytes`` fit with ``margin_bytes`` left over (0: it fits)."""
    if needed_bytes <= 0:
        return 0
    return max(0, needed_bytes + margin_bytes - free_bytes)


def human_bytes(count: int) -> str:
    """Decimal units, as disk vendors and the Hub show sizes: 190.3 GB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# --- events ------------------------------------------------------------------------------
# A download reports what happens through these, in the caller's thread. The CLI renders one
# bar for the whole quant (sum of ``FileProgress.done``) and a line per shard.

FileState = Literal["complete", "partial", "missing"]


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int
    on_disk: int  # bytes already there (a complete file, or a resumable partial one)
    state: FileState


@dataclass(frozen=True)
class DownloadPlanned:
    commit: str
    target: str
    files: tuple[PlannedFile, ...]
    total_bytes: int
    on_disk_bytes: int


@dataclass(frozen=True)
class FileStarted:
    path: str
    size: int
    resume_from: int


@dataclass(frozen=True)
class FileProgress:
    """Bytes of ``path`` on disk so far (absolute, so a restart from zero shows as a drop)."""

    path: str
    done: int
    size: int


@dataclass(frozen=True)
class FileRetrying:
    path: str
    attempt: int
    reason: str
    resume_from: int
    wait_s: float


@dataclass(frozen=True)
class XetFallback:
    path: str
    reason: str


@dataclass(frozen=True)
class VerifyProgress:
    path: str
    hashed: int
    size: int


@dataclass(frozen=True)
class FileVerified:
    path: str
    from_record: bool  # True: the recorded state matched, nothing was hashed


@dataclass(frozen=True)
class ChecksumRefetch:
    """A file's sha256 did not match: it was deleted and is fetched again, once."""

    path: str
    expected: str
    actual: str


@dataclass(frozen=True)
class FileReady:
    path: str
    local_path: str


@dataclass(frozen=True)
class OrphansRemoved:
    """Partial files another downloader left behind (huggingface_hub after a kill)."""

    paths: tuple[str, ...]
    nbytes: int


@dataclass(frozen=True)
class WaitingForLock:
    """Another process (nemolaunch, ``hf download``) is fetching the same file; waiting for it."""

    path: str
    lock: str


@dataclass(frozen=True)
class UsingCache:
    """No Hub: the files come from the cache alone."""

    reason: str


DownloadEvent = (
    DownloadPlanned
    | FileStarted
    | FileProgress
    | FileRetrying
    | XetFallback
    | VerifyProgress
    | FileVerified
    | ChecksumRefetch
    | FileReady
    | OrphansRemoved
    | WaitingForLock
    | UsingCache
)

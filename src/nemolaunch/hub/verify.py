"""Is a downloaded file the one the Hub lists? sha256, remembered, and the GGUF split headers.

huggingface_hub accepts any bytes of the right size, so after a download every file is hashed
against the LFS sha256 of the listing. Hashing 200-600 GB takes minutes, so a verified file is
recorded (size, mtime_ns, sha256) in a small JSON state file; later launches trust a file whose
size and mtime still match its record, and ``verify=True`` hashes again regardless.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from nemolaunch.adapters.gguf_header import read_gguf_header
from nemolaunch.core.split_names import parse_split_name
from nemolaunch.errors import NotGGUF, SplitCountMismatch, TruncatedGGUF

STATE_FORMAT = 1
_HASH_BLOCK = 8 * 1024 * 1024
# Progress is reported every this many bytes, not every block, to keep events cheap.
_REPORT_EVERY = 64 * 1024 * 1024


class HashStopped(Exception):
    """``should_stop`` asked hashing to stop (Ctrl-C); nothing was recorded."""


def sha256_of_file(
    path: Path,
    *,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> str:
    """The lowercase hex sha256 of ``path``; ``on_progress(bytes_hashed)`` is called as it goes."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_BLOCK)
    view = memoryview(buffer)
    hashed = 0
    reported = 0
    with path.open("rb", buffering=0) as handle:
        while True:
            if should_stop is not None and should_stop():
                raise HashStopped(str(path))
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])  # hashlib drops the GIL for large buffers: hashes run in parallel
            hashed += count
            if on_progress is not None and hashed - reported >= _REPORT_EVERY:
                on_progress(hashed)
                reported = hashed
    if on_progress is not None:
        on_progress(hashed)
    return digest.hexdigest()


class VerifiedState:
    """Files whose sha256 was checked, keyed by their real path relative to ``root``.

    Keys use the real path (a cache blob, not the snapshot symlink), so one blob verified through
    one revision counts for every revision that links to it.
    """

    def __init__(self, state_path: Path, root: Path, records: dict[str, dict[str, object]] | None = None) -> None:
        self.state_path = state_path
        self.root = root  # keys are relative to it, so moving the whole folder keeps the records
        self.records: dict[str, dict[str, object]] = dict(records or {})

    @classmethod
    def load(cls, state_path: Path, root: Path) -> VerifiedState:
        """The recorded state, or an empty one when the file is missing or unreadable (then files are re-hashed)."""
        try:
            data = json.loads(state_path.read_text(encoding="utf-8"))
            if data.get("format") != STATE_FORMAT or not isinstance(data.get("files"), dict):
                return cls(state_path, root)
            return cls(state_path, root, data["files"])
        except (OSError, ValueError, AttributeError):
            return cls(state_path, root)

    def key_of(self, file: Path) -> str:
        real = os.path.realpath(file)
        relative = os.path.relpath(real, os.path.realpath(self.root))
        return real if relative.startswith("..") else relative.replace(os.sep, "/")

    def matches(self, file: Path, sha256: str) -> bool:
        """True when ``file`` was verified as ``sha256`` and has not changed since (same size and mtime)."""
        record = self.records.get(self.key_of(file))
        if record is None or record.get("sha256") != sha256:
            return False
        try:
            stat = os.stat(file)
        except OSError:
            return False
        return record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns

    def record(self, file: Path, sha256: str) -> None:
        stat = os.stat(file)
        self.records[self.key_of(file)] = {
            "sha256": sha256,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def forget(self, file: Path) -> None:
        self.records.pop(self.key_of(file), None)

    def save(self) -> None:
        """Write the state atomically: a crash leaves the old file or the new one, never half of one."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"format": STATE_FORMAT, "files": self.records}, indent=1, sort_keys=True)
        handle, temporary = tempfile.mkstemp(prefix=".verified-", suffix=".tmp", dir=self.state_path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.state_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def gguf_split_count(path: Path) -> int | None:
    """``split.count`` from the GGUF header of ``path`` (None when the file is not split)."""
    try:
        header = read_gguf_header(path)
    except NotGGUF as exc:
        # A downloaded .gguf that is not one is damage (or a wrong upload), not a usage mistake.
        raise TruncatedGGUF(path=str(path), reason=f"it starts with {exc.magic!r}, not b'GGUF'") from exc
    value = header.metadata.get("split.count")
    return None if value is None else int(value)  # type: ignore[call-overload]


def check_split_headers(files: Iterable[tuple[str, Path]]) -> None:
    """Each ``-0000K-of-0000N.gguf`` file's header agrees that the model has N parts.

    ``files`` pairs repo paths (which carry the split name) with local paths (which may be cache
    symlinks named the same, or blobs named by hash).
    """
    for repo_path, local_path in files:
        split = parse_split_name(repo_path)
        if split is None:
            continue
        in_header = gguf_split_count(local_path)
        # A one-part "split" may lack the key: gguf-split writes it only when it splits.
        if in_header != split.count and not (in_header is None and split.count == 1):
            raise SplitCountMismatch(path=repo_path, in_name=split.count, in_header=in_header)

"""Where a download's files live: huggingface_hub's cache, or a ``local_dir`` laid out like ``hf download``.

Both layouts name partial files the way huggingface_hub once did (stable, by sha256), so a later
run finds them; :mod:`partial_state` says how much of each is already there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol

from nemolaunch.core.download_plan import RemoteFile, local_parts
from nemolaunch.hub import partial_state

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_STATE_FILE_NAME = "nemolaunch-verified.json"


class Layout(Protocol):
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


def make_layout(repo_id: str, *, cache_dir: Path | None, local_dir: Path | None) -> Layout:
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
        return blob if size_or_zero(blob) == remote.size else None

    def partial_path(self, remote: RemoteFile) -> Path:
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        return self.root / "blobs" / f"{remote.sha256}.incomplete"

    def partial_size(self, remote: RemoteFile) -> int:
        return partial_state.bytes_on_disk(
            self.root / "blobs" / f"{remote.sha256}.incomplete", remote.sha256, remote.size
        )

    def lock_path(self, remote: RemoteFile) -> Path:
        return self.cache_dir / ".locks" / self.folder_name / f"{remote.sha256}.lock"

    def orphans(self, remote: RemoteFile) -> list[Path]:
        pattern = re.compile(re.escape(remote.sha256) + r"\.[0-9a-f]{8}\.incomplete$")
        return [p for p in list_dir(self.root / "blobs") if pattern.fullmatch(p.name)]

    def all_orphans(self) -> list[Path]:
        pattern = re.compile(r"[0-9a-f]{40,64}\.[0-9a-f]{8}\.incomplete$")
        return [p for p in list_dir(self.root / "blobs") if pattern.fullmatch(p.name)]

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
        return text if COMMIT_SHA.fullmatch(text) else None

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
        return path if size_or_zero(path) == remote.size else None

    def _download_folder(self, remote: RemoteFile) -> Path:
        return self.root.joinpath(".cache", "huggingface", "download", *local_parts(remote.path)[:-1])

    def partial_path(self, remote: RemoteFile) -> Path:
        # huggingface_hub's naming (and folder creation), so its own partial files sit beside ours.
        from huggingface_hub._local_folder import get_local_download_paths

        return get_local_download_paths(self.root, remote.path).incomplete_path(remote.sha256)

    def partial_size(self, remote: RemoteFile) -> int:
        # Found by pattern rather than computed, so that merely looking creates no folders.
        ours = re.compile(r"[A-Za-z0-9_=-]+\." + re.escape(remote.sha256) + r"\.incomplete$")
        folder = list_dir(self._download_folder(remote))
        sizes = [partial_state.bytes_on_disk(p, remote.sha256, remote.size) for p in folder if ours.fullmatch(p.name)]
        return max(sizes, default=0)

    def lock_path(self, remote: RemoteFile) -> Path:
        from huggingface_hub._local_folder import get_local_download_paths

        return get_local_download_paths(self.root, remote.path).lock_path

    def orphans(self, remote: RemoteFile) -> list[Path]:
        pattern = re.compile(r"[A-Za-z0-9_=-]+\." + re.escape(remote.sha256) + r"\.[0-9a-f]{8}\.incomplete$")
        return [p for p in list_dir(self._download_folder(remote)) if pattern.fullmatch(p.name)]

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


def size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def list_dir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []

"""Listing a repository's files: the Hub, else the local HF cache.

Only I/O lives here: one Hub listing (sizes, LFS sha256s, the commit) serves both the quant catalog
and the download that follows; a scan of the hub cache stands in when the Hub cannot answer.
``nemolaunch.core.catalog`` decides what the files mean (and falls back to its built-in table).
Nothing is printed; what the user should hear comes back as warnings.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from nemolaunch import __version__
from nemolaunch.core.catalog import Catalog, ListingEntry, select_catalog
from nemolaunch.core.download_plan import RemoteFile, check_listed_file, check_repo_id
from nemolaunch.errors import (
    HubRequestFailed,
    HubTooSlow,
    HubUnreachable,
    NoGGUFInRepo,
    NotCachedOffline,
    first_line,
)
from nemolaunch.hub.api import resolve_url, translate
from nemolaunch.hub.deadline import DEFAULT_HUB_DEADLINE_S, Deadline
from nemolaunch.hub.layout import COMMIT_SHA

log = logging.getLogger(__name__)

_TRUE_VALUES = {"1", "on", "yes", "true"}
T = TypeVar("T")


@dataclass(frozen=True)
class CatalogLookup:
    catalog: Catalog
    warnings: tuple[str, ...] = ()
    offline_reason: str | None = None  # why the Hub was not asked, when it was not
    listing: RepoListing | None = None  # the Hub's answer, when it gave one


def hub_offline(environ: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) set to a true value."""
    value = environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE_VALUES


def load_catalog(
    repo: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    deadline_s: float = DEFAULT_HUB_DEADLINE_S,
) -> CatalogLookup:
    """The quant catalog for ``repo``: from the Hub, else the HF cache, else the built-in table.

    The Hub's answer comes back too (``listing``: sizes, sha256s and the commit), so a download
    that follows asks the Hub nothing more. A Hub that answers "no such repository" is an error,
    not a reason to fall back: the cache would only hide the typo. ``endpoint`` and ``token``
    default to huggingface_hub's (HF_ENDPOINT, HF_TOKEN or ``hf auth login``).
    """
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    listing: RepoListing | None = None
    offline_reason: str | None = None
    unreachable: HubUnreachable | None = None
    if hub_offline(environ):
        offline_reason = "HF_HUB_OFFLINE is set"
        warnings.append("HF_HUB_OFFLINE is set: quants listed from the local cache or built-in figures")
    else:
        try:
            listing = fetch_listing(repo_id=repo, endpoint=endpoint, token=token, deadline_s=deadline_s)
        except HubUnreachable as exc:
            unreachable = exc
            offline_reason = f"the Hub is unreachable ({exc.reason})"
            warnings.append(f"the Hugging Face Hub could not be reached ({exc.reason}): using the local cache")
    hub = listing.entries() if listing is not None else None
    cache = None if hub is not None else list_cached_files(repo, cache_dir=cache_dir)
    try:
        catalog = select_catalog(repo, hub=hub, cache=cache)
    except NoGGUFInRepo:
        if unreachable is not None:
            raise unreachable from None  # the cache knew nothing: the real trouble is the network
        if offline_reason is not None:
            raise NotCachedOffline(repo=repo, quant="quant", reason=offline_reason, cached=[]) from None
        raise
    if catalog.source == "builtin":
        warnings.append(f"no listing of {repo} in the cache: using built-in approximate sizes")
    return CatalogLookup(catalog=catalog, warnings=tuple(warnings), offline_reason=offline_reason, listing=listing)


@dataclass(frozen=True)
class RepoListing:
    """A repo at one commit: its LFS files (what a quant is made of) and the rest, by name and size."""

    repo_id: str
    revision: str
    commit: str
    gated: bool
    files: tuple[RemoteFile, ...]
    other_files: tuple[ListingEntry, ...]

    def find(self, path: str) -> RemoteFile | None:
        return next((remote for remote in self.files if remote.path == path), None)

    def entries(self) -> list[ListingEntry]:
        """Every file with its size, as the catalog reads a listing."""
        return [ListingEntry(remote.path, remote.size) for remote in self.files] + list(self.other_files)


def fetch_listing(
    *,
    repo_id: str,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | None = None,
    deadline_s: float = DEFAULT_HUB_DEADLINE_S,
) -> RepoListing:
    """The repo's files at ``revision``, with sizes and LFS sha256, and the commit it resolves to.

    One ``GET /api/models/<repo>/revision/<rev>?blobs=true`` (what ``HfApi.model_info(files_metadata=True)``
    asks), sent with huggingface_hub's own session, headers and error parsing, but without importing
    ``hf_api``: that module alone costs more start-up (~0.06 s) than the request on a near Hub.
    Raises HubRepoNotFound, HubRevisionNotFound or HubRequestFailed when the Hub refuses, and
    HubUnreachable when it cannot answer (network, 5xx, 429), HubTooSlow when its answer takes more than
    ``deadline_s`` in all.
    """
    check_repo_id(repo_id)
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    hub = hub_endpoint(endpoint)
    check_hub_reachable(hub)
    resolved_token = resolve_token(token)
    url = f"{hub}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
    headers = build_hf_headers(token=resolved_token or False, library_name="nemolaunch", library_version=__version__)
    deadline = Deadline(deadline_s, endpoint=hub, what=f"the listing of {repo_id}")
    try:
        request = {"headers": headers, "params": {"blobs": True}, "timeout": deadline.timeout()}
        with get_session().stream("GET", url, **request) as response:
            if response.status_code >= 400:
                response.read()  # an error's few bytes, for hf_raise_for_status to quote
                hf_raise_for_status(response)
            body = deadline.read_body(response.iter_bytes())
        info = json.loads(body)
    except HubTooSlow:
        raise
    except Exception as exc:
        raise _listing_error(exc, repo_id=repo_id, revision=revision, endpoint=hub, token=resolved_token) from exc
    try:
        return _parse_listing(info, repo_id=repo_id, revision=revision)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"the listing is not what the Hub sends ({first_line(exc) or type(exc).__name__})"
        raise HubRequestFailed(repo_id=repo_id, status=200, reason=reason) from exc


def _parse_listing(info: dict[str, Any], *, repo_id: str, revision: str) -> RepoListing:
    files: list[RemoteFile] = []
    others: list[ListingEntry] = []
    for sibling in info.get("siblings") or ():
        lfs = sibling.get("lfs")
        path = str(sibling["rfilename"])
        if lfs is not None:
            remote = RemoteFile(path, int(lfs["size"]), str(lfs["sha256"]).lower())
            # Checked here, once, so that plan (which reads a header) and download refuse the same listing.
            check_listed_file(repo_id, path=remote.path, size=remote.size, sha256=remote.sha256)
            files.append(remote)
        else:
            entry = ListingEntry(path, int(sibling.get("size") or 0))
            if check_listed_file(repo_id, path=entry.path, size=entry.size, sha256=None):
                others.append(entry)
            else:
                log.debug("%s lists %r, an unsafe name: left out", repo_id, path)
    commit = info.get("sha")
    if not isinstance(commit, str) or not COMMIT_SHA.fullmatch(commit):
        # The commit becomes a folder name in the cache: only a real hash may (a mirror could send "../x").
        raise HubRequestFailed(repo_id=repo_id, status=200, reason=f"the listing names no valid commit ({commit!r})")
    return RepoListing(
        repo_id=repo_id,
        revision=revision,
        commit=commit,
        gated=bool(info.get("gated")),
        files=tuple(files),
        other_files=tuple(others),
    )


def _listing_error(exc: Exception, *, repo_id: str, revision: str, endpoint: str, token: str | None) -> Exception:
    """A listing that failed: the Hub down or busy (5xx, 429, no answer) is unreachable, so a plan can
    fall back to the cache; what the Hub refuses is that refusal, in one line."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):  # an OSError too: asked first
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and (status >= 500 or status == 429):
            return HubUnreachable(endpoint=endpoint, reason=first_line(exc))
        return translate(exc, repo_id=repo_id, revision=revision, endpoint=endpoint, token=token)
    if isinstance(exc, OSError):  # a connection refused or reset under the client
        return HubUnreachable(endpoint=endpoint, reason=first_line(exc) or type(exc).__name__)
    return translate(exc, repo_id=repo_id, revision=revision, endpoint=endpoint, token=token)


def hub_endpoint(endpoint: str | None) -> str:
    """``endpoint``, else huggingface_hub's (HF_ENDPOINT, read when it was imported), without a trailing /."""
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    """``token``, else the one huggingface_hub finds (HF_TOKEN, or ``hf auth login``)."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def check_hub_reachable(endpoint: str, *, environ: Mapping[str, str] | None = None) -> None:
    """Fail at once, as HubUnreachable, when the Hub's host does not resolve or refuses connections.

    huggingface_hub retries a failed connection five times with backoff (about 23 s); no retry
    brings back a network without DNS or a port nobody listens on, so one quick look decides.
    Behind a proxy only the proxy can tell, so nothing is checked then.
    """
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in _PROXY_VARIABLES):
        return
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_CHECK_S):
            pass
    except socket.gaierror as exc:
        raise HubUnreachable(endpoint=endpoint, reason=f"{host} does not resolve ({exc.strerror})") from exc
    except ConnectionRefusedError as exc:
        raise HubUnreachable(endpoint=endpoint, reason=f"{host}:{port} refused the connection") from exc
    except OSError:
        return  # a timeout or an odd network: let huggingface_hub try, with its retries


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_CONNECT_CHECK_S = 5.0


def list_cached_files(repo: str, *, cache_dir: Path | None = None) -> list[ListingEntry] | None:
    """The files of ``repo`` in the local hub cache, or None when the cache has no snapshot of it.

    Only finished downloads appear in a snapshot (huggingface_hub links a file
    there once its blob is complete), so a partial download shows up as a
    missing shard. The snapshot ``refs/main`` names is preferred; otherwise the
    newest one holding a GGUF file.
    """
    repo_dir = _cached_repo_dir(repo, cache_dir if cache_dir is not None else _default_cache_dir())
    if repo_dir is None:
        return None
    for snapshot in _snapshots(repo_dir):
        entries = _snapshot_entries(snapshot)
        if any(entry.path.lower().endswith(".gguf") for entry in entries):
            return entries
    return None


def _default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_repo_dir(repo: str, cache_dir: Path) -> Path | None:
    folder = "models--" + repo.replace("/", "--")
    exact = cache_dir / folder
    if exact.is_dir():
        return exact
    # The cache keeps the spelling used at download time; repo ids match case-insensitively.
    try:
        for candidate in cache_dir.iterdir():
            if candidate.name.lower() == folder.lower() and candidate.is_dir():
                return candidate
    except OSError:
        return None
    return None


def _snapshots(repo_dir: Path) -> list[Path]:
    snapshots_dir = repo_dir / "snapshots"
    try:
        snapshots = [path for path in snapshots_dir.iterdir() if path.is_dir()]
    except OSError:
        return []
    snapshots.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    main_ref = repo_dir / "refs" / "main"
    try:
        main_commit = main_ref.read_text(encoding="utf-8").strip()
    except OSError:
        return snapshots
    return sorted(snapshots, key=lambda path: path.name != main_commit)


def _snapshot_entries(snapshot: Path) -> list[ListingEntry]:
    entries: list[ListingEntry] = []
    for path in sorted(snapshot.rglob("*")):
        try:
            if not path.is_file():  # follows the link into blobs/; a dangling link is not a file
                continue
            size = path.stat().st_size
        except OSError:
            continue
        entries.append(ListingEntry(path=path.relative_to(snapshot).as_posix(), size=size))
    return entries


def cached_quant_paths(repo: str, files: Iterable[str], *, cache_dir: Path | None = None) -> tuple[Path, ...] | None:
    """Local paths of every one of ``files`` in one cached snapshot of ``repo``; None unless all are there.

    Looks only at finished downloads (snapshot links), never at ``.incomplete`` blobs.
    """
    wanted = list(files)
    repo_dir = _cached_repo_dir(repo, cache_dir if cache_dir is not None else _default_cache_dir())
    if repo_dir is None or not wanted:
        return None
    for snapshot in _snapshots(repo_dir):
        paths = tuple(snapshot / name for name in wanted)
        if all(path.is_file() for path in paths):
            return paths
    return None


def read_file_prefix(
    repo: str,
    path: str,
    *,
    limit: int,
    first_look: int,
    take: Callable[[bytes], T | None],
    deadline_s: float = DEFAULT_HUB_DEADLINE_S,
) -> T | None:
    """Offer ``take`` the first ``first_look`` bytes of ``path`` in ``repo``, then twice as many, and so on up
    to ``limit`` (or the file's end); return its first answer that is not None.

    Each round asks (an HTTP Range request through huggingface_hub's session, kept alive) only for
    the bytes it lacks, so none is fetched twice. A server that ignores the Range is read only as
    far as needed. All rounds together end within ``deadline_s`` (HubTooSlow past it).
    """
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    # Our own URL, not hf_hub_url: that would import huggingface_hub's download module (and asyncio, for
    # its progress bars), a sixth of a download's start-up.
    hub = hub_endpoint(None)
    url = resolve_url(hub, repo, "main", path)
    deadline = Deadline(deadline_s, endpoint=hub, what=f"the header of {repo}/{path}")
    data = bytearray()
    look_at = min(first_look, limit)
    while True:
        headers["Range"] = f"bytes={len(data)}-{look_at - 1}"
        wanted = look_at - len(data)
        timeout = deadline.timeout()
        with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            if response.status_code != 206 and data:
                data.clear()  # the whole file from its start: the Range was not honoured
                wanted = look_at
            received = 0
            for chunk in response.iter_bytes():
                data += chunk
                received += len(chunk)
                if received >= wanted:
                    break
                deadline.check(len(data))
        del data[look_at:]
        found = take(bytes(data))
        if found is not None or len(data) < look_at or look_at >= limit:
            return found
        look_at = min(look_at * 2, limit)

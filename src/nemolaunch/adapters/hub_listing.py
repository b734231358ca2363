"""Listing a repository's files for the quant catalog: the Hub, else the local HF cache.

Only I/O lives here: the Hub's ``list_repo_tree`` and a scan of the hub cache
become plain ``ListingEntry`` lists, and ``nemolaunch.core.catalog`` decides
what they mean (and falls back to its built-in table). Nothing is printed;
what the user should hear comes back as warnings.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nemolaunch.core.catalog import Catalog, ListingEntry, select_catalog
from nemolaunch.errors import (
    GatedRepoNeedsToken,
    GatedRepoNoAccess,
    HubRepoNotFound,
    HubRequestFailed,
    HubRevisionNotFound,
    HubUnreachable,
    NoGGUFInRepo,
    NotCachedOffline,
    first_line,
)

log = logging.getLogger(__name__)

_TRUE_VALUES = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class CatalogLookup:
    catalog: Catalog
    warnings: tuple[str, ...] = ()
    offline_reason: str | None = None  # why the Hub was not asked, when it was not


def hub_offline(environ: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) set to a true value."""
    value = environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE_VALUES


def load_catalog(
    repo: str,
    *,
    api: Any | None = None,
    cache_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> CatalogLookup:
    """The quant catalog for ``repo``: from the Hub, else the HF cache, else the built-in table.

    ``api`` is a huggingface_hub ``HfApi`` (made here when not given); tests
    pass a stand-in. The catalog records which source it came from. A Hub
    that answers "no such repository" or "gated" is an error, not a reason to
    fall back: the cache would only hide the typo.
    """
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    hub: list[ListingEntry] | None = None
    offline_reason: str | None = None
    unreachable: HubUnreachable | None = None
    if hub_offline(environ):
        offline_reason = "HF_HUB_OFFLINE is set"
        warnings.append("HF_HUB_OFFLINE is set: quants listed from the local cache or built-in figures")
    else:
        try:
            hub = list_hub_files(repo, api=api)
        except HubUnreachable as exc:
            unreachable = exc
            offline_reason = f"the Hub is unreachable ({exc.reason})"
            warnings.append(f"the Hugging Face Hub could not be reached ({exc.reason}): using the local cache")
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
    return CatalogLookup(catalog=catalog, warnings=tuple(warnings), offline_reason=offline_reason)


def list_hub_files(repo: str, *, api: Any | None = None) -> list[ListingEntry]:
    """Every file in ``repo`` on the Hub with its size.

    Raises HubRepoNotFound, HubRevisionNotFound, GatedRepoNeedsToken /
    GatedRepoNoAccess or HubRequestFailed when the Hub refuses, and
    HubUnreachable when it cannot answer at all (network, offline mode, 5xx).
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    client = api if api is not None else HfApi()
    endpoint = str(getattr(client, "endpoint", None) or constants.ENDPOINT).rstrip("/")
    if api is None:
        check_hub_reachable(endpoint)
    try:
        return to_entries(client.list_repo_tree(repo, recursive=True))
    except GatedRepoError as exc:  # before RepositoryNotFoundError, its parent class
        url = f"{endpoint}/{repo}"
        raise (GatedRepoNoAccess if get_token() else GatedRepoNeedsToken)(repo_id=repo, url=url) from exc
    except RepositoryNotFoundError as exc:
        raise HubRepoNotFound(repo_id=repo, endpoint=endpoint) from exc
    except RevisionNotFoundError as exc:
        raise HubRevisionNotFound(repo_id=repo, revision="main") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and 400 <= status < 500 and status != 429:
            raise HubRequestFailed(repo_id=repo, status=status, reason=first_line(exc)) from exc
        raise HubUnreachable(endpoint=endpoint, reason=first_line(exc)) from exc
    except _network_errors() as exc:
        raise HubUnreachable(endpoint=endpoint, reason=first_line(exc)) from exc


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


def to_entries(items: Iterable[Any]) -> list[ListingEntry]:
    """``list_repo_tree`` items (RepoFile, RepoFolder) as entries; folders have no size and drop out."""
    entries: list[ListingEntry] = []
    for item in items:
        size = getattr(item, "size", None)
        if isinstance(size, int):
            entries.append(ListingEntry(path=item.path, size=size))
    return entries


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


def _network_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub talks HTTP through httpx2 (httpx in older releases); its
    # transport errors are not OSErrors.
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        errors.append(module.HTTPError)
    return tuple(errors)


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


def fetch_file_prefix(repo: str, path: str, nbytes: int, *, timeout_s: float = 30.0) -> bytes:
    """The first ``nbytes`` of ``path`` in ``repo`` (an HTTP Range request through huggingface_hub's session).

    A server that ignores the Range is read only as far as needed.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = build_hf_headers()
    headers["Range"] = f"bytes=0-{nbytes - 1}"
    headers["Accept-Encoding"] = "identity"
    data = bytearray()
    url = hf_hub_url(repo, path)
    with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout_s) as response:
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= nbytes:
                break
    return bytes(data[:nbytes])

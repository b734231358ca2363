"""A fake Hugging Face Hub on 127.0.0.1, speaking what huggingface_hub 2.4.0 asks of the real one.

Tests define repos in Python (repo id -> commit sha, files: path -> bytes) and switch faults on per
file (drop the connection, corrupt bytes, stall, answer an error status). Counters record what was
served, so a test can assert how many bytes crossed the wire twice.

Two servers run: the Hub (``url``) answers the API and ``/resolve``, and, like the real Hub, it
redirects LFS files to a CDN on another origin (``cdn_url``), which serves the bytes with ``Range``.
Because the CDN is another origin, huggingface_hub stops at the redirect for its metadata HEAD (the
commit, etag and size are read from the redirect itself) and drops the token when following it.

The download under test runs in a subprocess whose environment names this server in HF_ENDPOINT
(huggingface_hub reads it once, at import); ``hub.env(tmp_path)`` builds that environment.

What huggingface_hub 2.4.0 requests (read from its source):
- ``HfApi.model_info``: ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=True`` for sizes and LFS sha256).
- ``HfApi.list_repo_tree``: ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..&expand=..``,
  paginated through a ``Link: <...>; rel="next"`` header.
- ``hf_hub_download``: ``HEAD /{repo}/resolve/{rev}/{path}`` without following cross-origin redirects,
  reading ``X-Repo-Commit``, ``X-Linked-Etag`` (else ``ETag``), ``X-Linked-Size`` (else
  ``Content-Length``), ``X-Xet-Hash`` + ``Link rel="xet-auth"``; then ``GET`` of the location, with
  ``Range: bytes=N-`` when it resumes within one process.
- Errors are told apart by ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

_CHUNK = 1024 * 1024
# The path a Fault is added under to make a repo's API (listing) answers fail instead of a file's bytes.
API = "<api>"
_NON_LFS_SUFFIXES = (".md", ".json", ".txt", ".gitattributes")


_DIGESTS: dict[tuple[str, int], tuple[bytes, str]] = {}


def _cached_digest(kind: str, content: bytes, compute: Callable[[bytes], str]) -> str:
    """Hash each file's bytes once: every listing and download asks again, and 100 MB cost 0.1 s.

    Keyed by the bytes object's identity, and checked against it, so a test that swaps a
    file's content gets the new hash.
    """
    key = (kind, id(content))
    cached = _DIGESTS.get(key)
    if cached is None or cached[0] is not content:
        cached = (content, compute(content))
        _DIGESTS[key] = cached
    return cached[1]


def sha256_hex(content: bytes) -> str:
    return _cached_digest("sha256", content, lambda data: hashlib.sha256(data).hexdigest())


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file, which the Hub uses as the etag of non-LFS files."""
    return _cached_digest("git-blob", content, lambda data: hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())


def fake_commit_sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


@dataclass
class Fault:
    """One misbehaviour of the byte transfer of a file, used for the next ``times`` GETs of it.

    ``times=None`` keeps it forever. Only one fault applies per request (the first in the file's list).
    """

    drop_after: int | None = None  # close the connection after this many body bytes
    stall_after: int | None = None  # send this many body bytes, then send nothing for stall_s
    stall_s: float = 30.0
    corrupt: bool = False  # flip the file's middle byte: right size, wrong content
    status: int | None = None  # answer this status instead of the bytes
    length_off_by: int = 0  # a Content-Length this far from the bytes sent (a broken server or proxy)
    # Send the body one byte every trickle_s seconds: never silent long enough for a read timeout.
    # On the API (path API) it trickles the listing's JSON; on a file, its bytes.
    trickle_s: float | None = None
    # Which GETs it meets: any; "whole", only those without a Range (a one-piece download's first);
    # "resumed", only ranged ones from past byte 0 (a retry). A GET it does not meet leaves it queued.
    on: str = "any"
    times: int | None = 1


# --- what a repository publishes ------------------------------------------------------
def gguf_shard(index: int, count: int, payload_bytes: int, *, header_count: int | None = None) -> bytes:
    """A real GGUF split part, as gguf-split writes them: split.* keys and one tensor of random bytes.

    Random, so that nothing on the way can make it cheaper by compressing it.
    """
    import numpy as np
    from gguf import GGUFWriter

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "part.gguf"
        writer = GGUFWriter(str(path), "nemotron_h_moe")
        writer.add_uint16("split.no", index - 1)
        writer.add_uint16("split.count", count if header_count is None else header_count)
        writer.add_int32("split.tensors.count", count)
        writer.add_tensor(f"blk.{index}.weight", np.frombuffer(os.urandom(payload_bytes), dtype=np.int8).copy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    sha: str
    gated: bool = False
    tokens_with_access: set[str] = field(default_factory=set)
    # Sizes the listing claims instead of the real ones (a disk check refuses before any byte).
    declared_sizes: dict[str, int] = field(default_factory=dict)
    # Branch or tag name -> commit sha; the commit sha itself always resolves.
    refs: dict[str, str] = field(default_factory=dict)
    # Announce Xet storage (X-Xet-Hash and an xet-auth link) whose token route fails.
    xet_broken: bool = False

    def is_lfs(self, path: str) -> bool:
        return not path.endswith(_NON_LFS_SUFFIXES)

    def size_of(self, path: str) -> int:
        return self.declared_sizes.get(path, len(self.files[path]))

    def sha256_of(self, path: str) -> str:
        return sha256_hex(self.files[path])

    def etag_of(self, path: str) -> str:
        return self.sha256_of(path) if self.is_lfs(path) else git_blob_sha1(self.files[path])


@dataclass(frozen=True)
class RequestRecord:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # the URL path, unquoted, without the query
    range: str | None
    status: int
    authorized: bool
    file: str | None  # repo path of the file whose bytes were asked for, if any
    connection: str = ""  # the client's address and port: one per TCP connection


class FakeHub:
    """Two loopback HTTP servers (Hub and CDN) and the repos they serve."""

    def __init__(
        self,
        *,
        redirect_lfs: bool = True,
        tree_page_size: int = 1000,
        rate_bytes_per_s: float | None = None,
        honor_range: bool = True,
    ) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.redirect_lfs = redirect_lfs
        self.tree_page_size = tree_page_size
        # A cap on each connection, as a CDN edge has one (each response is throttled on its own, and a
        # connection carries one at a time); also lets a test kill a download half way through a small file.
        self.rate_bytes_per_s = rate_bytes_per_s
        # False: answer every GET with the whole file (200), as a server that ignores Range does.
        self.honor_range = honor_range
        self.requests: list[RequestRecord] = []
        self.bytes_served: dict[tuple[str, str], int] = defaultdict(int)
        self.counter_generation = 0
        # Bodies being sent right now, and the most there ever were at once (since the last reset).
        self.active_transfers = 0
        self.peak_transfers = 0
        self._faults: dict[tuple[str, str], list[Fault]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._hub = _Server(self, "hub")
        self._cdn = _Server(self, "cdn")
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_port}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_port}"

    def start(self) -> FakeHub:
        for server in (self._hub, self._cdn):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled responses
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- configuration ----------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        sha: str | None = None,
        gated: bool = False,
        tokens_with_access: set[str] | None = None,
        declared_sizes: dict[str, int] | None = None,
        xet_broken: bool = False,
    ) -> FakeRepo:
        repo = FakeRepo(
            repo_id=repo_id,
            files=dict(files),
            sha=sha or fake_commit_sha(repo_id),
            gated=gated,
            tokens_with_access=set(tokens_with_access or ()),
            declared_sizes=dict(declared_sizes or {}),
            xet_broken=xet_broken,
        )
        repo.refs["main"] = repo.sha
        self.repos[repo_id] = repo
        return repo

    def add_fault(self, repo_id: str, path: str, fault: Fault) -> None:
        with self._lock:
            self._faults[(repo_id, path)].append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_served.clear()
            self.peak_transfers = self.active_transfers
            # A transfer still running from before (a killed client's) must not count against the new tally.
            self.counter_generation += 1

    def env(self, hf_home: Path, **extra: str) -> dict[str, str]:
        """The environment of a subprocess that downloads from this hub into ``hf_home``."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
        env.update(
            HF_ENDPOINT=self.url,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            # nemolaunch's own cache (remote GGUF headers) is per test too, like the HF cache.
            XDG_CACHE_HOME=str(hf_home / "xdg-cache"),
        )
        env.update(extra)
        return env

    # --- what was served ----------------------------------------------------------------
    def served(self, repo_id: str, path: str) -> int:
        with self._lock:
            return self.bytes_served.get((repo_id, path), 0)

    def gets_of(self, path: str) -> list[RequestRecord]:
        """The byte transfers (GETs that reached a file's content) of one repo path."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.file == path]

    def connections_of(self, path: str) -> set[str]:
        """The TCP connections that carried GETs of one repo path."""
        return {record.connection for record in self.gets_of(path)}

    # --- internals used by the handler ------------------------------------------------------
    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _count_transfers(self, change: int) -> None:
        with self._lock:
            self.active_transfers += change
            self.peak_transfers = max(self.peak_transfers, self.active_transfers)

    def _count(self, repo_id: str, path: str, nbytes: int, generation: int) -> None:
        with self._lock:
            if generation == self.counter_generation:
                self.bytes_served[(repo_id, path)] += nbytes

    def _take_fault(self, repo_id: str, path: str, *, kind: str = "any") -> Fault | None:
        with self._lock:
            faults = self._faults.get((repo_id, path))
            if not faults or faults[0].on not in ("any", kind):
                return None
            fault = faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    faults.pop(0)
            return fault

    def _file_by_sha256(self, sha256: str) -> tuple[FakeRepo, str] | None:
        for repo in self.repos.values():
            for path in repo.files:
                if repo.is_lfs(path) and repo.sha256_of(path) == sha256:
                    return repo, path
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The listen backlog: the default (5) drops the SYNs of a client that opens 16 connections at once,
    # and each dropped one then waits a second to retry.
    request_queue_size = 128

    def __init__(self, hub: FakeHub, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.role = role


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?P<rest>/.*)?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    # --- plumbing -------------------------------------------------------------------
    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def _redirect(self, headers: dict[str, str]) -> None:
        self.send_response(302)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._log(302, None)

    def _log(self, status: int, file: str | None) -> None:
        self.hub._record(
            RequestRecord(
                server=self.server.role,
                method=self.command,
                path=unquote(urlsplit(self.path).path),
                range=self.headers.get("Range"),
                status=status,
                authorized=self._token() is not None,
                file=file,
                connection=f"{self.client_address[0]}:{self.client_address[1]}",
            )
        )

    def _json(
        self, status: int, payload: object, headers: dict[str, str] | None = None, *, trickle_s: float | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self._log(status, None)  # before the client can see the answer: a test counting requests sees it
        self.end_headers()
        if self.command == "HEAD":
            return
        if trickle_s is None:
            self.wfile.write(body)
        else:
            self._trickle(memoryview(body), trickle_s)

    def _trickle(self, body: memoryview, every_s: float, count: Callable[[int], None] | None = None) -> None:
        """One byte, then a wait, until the body is out, the client has gone, or the hub stops."""
        for index in range(len(body)):
            if self._client_gone() or self.hub._stopping.is_set():
                self.close_connection = True
                return
            if count is not None:
                count(1)
            self.wfile.write(body[index : index + 1])
            self.wfile.flush()
            self.hub._stopping.wait(every_s)

    def _error(
        self,
        status: int,
        code: str | None,
        message: str,
        extra: dict[str, str] | None = None,
        file: str | None = None,
    ) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self._log(status, file)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _repo_or_error(self, repo_id: str) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _revision_or_error(self, repo: FakeRepo, revision: str) -> str | None:
        if revision == repo.sha:
            return repo.sha
        sha = repo.refs.get(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        return sha

    def _access_or_error(self, repo: FakeRepo) -> bool:
        if not repo.gated:
            return True
        token = self._token()
        if token is None:
            self._error(401, "GatedRepo", "Access to model " + repo.repo_id + " is restricted.")
            return False
        if token not in repo.tokens_with_access:
            message = f"Access to model {repo.repo_id} is restricted and you are not in the authorized list."
            self._error(403, "GatedRepo", message)
            return False
        return True

    # --- dispatch -------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        try:
            if self.server.role == "cdn":
                self._cdn(path)
            elif match := _API.match(path):
                self._api(unquote(match["repo"]), unquote(match["rest"] or ""), query)
            elif match := _RESOLVE.match(path):
                self._resolve(unquote(match["repo"]), unquote(match["rev"]), unquote(match["path"]))
            else:
                self._error(404, None, "Not found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- API: model info and tree -------------------------------------------------------
    def _api(self, repo_id: str, rest: str, query: dict[str, list[str]]) -> None:
        fault = self.hub._take_fault(repo_id, API)
        if fault is not None and fault.status is not None:
            self._error(fault.status, None, f"fault injected: {fault.status}")
            return
        repo = self._repo_or_error(repo_id)
        if repo is None:
            return
        if rest.startswith("/xet-read-token/"):
            # Xet trouble on demand: the token route fails, so hf_xet can never start.
            self._error(403, None, "Xet token route disabled on this fake hub")
            return
        if rest == "" or rest.startswith("/revision/"):
            sha = self._revision_or_error(repo, rest[len("/revision/") :] if rest else "main")
            if sha is not None:
                trickle_s = fault.trickle_s if fault is not None else None
                self._model_info(repo, sha, with_blobs=_truthy(query.get("blobs")), trickle_s=trickle_s)
            return
        if rest.startswith("/tree/"):
            revision, _, subpath = rest[len("/tree/") :].partition("/")
            sha = self._revision_or_error(repo, revision)
            if sha is not None:
                self._tree(repo, subpath.strip("/"), recursive=_truthy(query.get("recursive")), query=query)
            return
        self._error(404, None, "Not found")

    def _model_info(self, repo: FakeRepo, sha: str, *, with_blobs: bool, trickle_s: float | None = None) -> None:
        siblings = []
        for path in sorted(repo.files):
            sibling: dict[str, object] = {"rfilename": path}
            if with_blobs:
                sibling["size"] = repo.size_of(path)
                sibling["blobId"] = git_blob_sha1(repo.files[path])
                if repo.is_lfs(path):
                    sibling["lfs"] = {"sha256": repo.sha256_of(path), "size": repo.size_of(path), "pointerSize": 134}
            siblings.append(sibling)
        self._json(
            200,
            {
                "_id": "fake" + repo.sha[:20],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": sha,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "tags": ["gguf"],
                "downloads": 0,
                "likes": 0,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "siblings": siblings,
            },
            trickle_s=trickle_s,
        )

    def _tree(self, repo: FakeRepo, subpath: str, *, recursive: bool, query: dict[str, list[str]]) -> None:
        prefix = subpath + "/" if subpath else ""
        if subpath and not any(p.startswith(prefix) for p in repo.files):
            self._error(404, "EntryNotFound", f"{subpath} does not exist on this revision")
            return
        entries: dict[str, dict[str, object]] = {}
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            # Folders between the listed folder and the file, as the Hub lists them.
            segments = rest.split("/")
            for depth in range(1, len(segments)):
                folder = prefix + "/".join(segments[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {"type": "directory", "oid": fake_commit_sha(folder), "path": folder})
            if len(segments) > 1 and not recursive:
                continue
            entry: dict[str, object] = {
                "type": "file",
                "oid": git_blob_sha1(repo.files[path]),
                "size": repo.size_of(path),
                "path": path,
            }
            if repo.is_lfs(path):
                entry["lfs"] = {"oid": repo.sha256_of(path), "size": repo.size_of(path), "pointerSize": 134}
            entries[path] = entry
        ordered = [entries[key] for key in sorted(entries)]
        start = int(query.get("cursor", ["0"])[0])
        page = ordered[start : start + self.hub.tree_page_size]
        headers = {}
        if start + self.hub.tree_page_size < len(ordered):
            next_query = f"recursive={str(recursive).lower()}&cursor={start + self.hub.tree_page_size}"
            next_url = f"{self.hub.url}{urlsplit(self.path).path}?{next_query}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._json(200, page, headers)

    # --- resolve and CDN ------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo_or_error(repo_id)
        if repo is None:
            return
        sha = self._revision_or_error(repo, revision)
        if sha is None or not self._access_or_error(repo):
            return
        if path not in repo.files:
            self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            sha256 = repo.sha256_of(path)
            headers["X-Linked-Etag"] = f'"{sha256}"'
            headers["X-Linked-Size"] = str(repo.size_of(path))
            if repo.xet_broken:
                headers["X-Xet-Hash"] = hashlib.sha256(b"xet" + sha256.encode()).hexdigest()
                route = f"{self.hub.url}/api/models/{repo.repo_id}/xet-read-token/{sha}"
                headers["Link"] = f'<{route}>; rel="xet-auth"'
            if self.hub.redirect_lfs:
                headers["Location"] = f"{self.hub.cdn_url}/lfs/{sha256}?file={quote(path)}"
                self._redirect(headers)
                return
            headers["ETag"] = f'"{sha256}"'
        else:
            headers["ETag"] = f'"{git_blob_sha1(repo.files[path])}"'
        self._send_file(repo, path, headers)

    def _cdn(self, path: str) -> None:
        found = self.hub._file_by_sha256(path.rsplit("/", 1)[-1]) if path.startswith("/lfs/") else None
        if found is None:
            self._error(404, None, "No such object")
            return
        repo, repo_path = found
        self._send_file(repo, repo_path, {"ETag": f'"{repo.sha256_of(repo_path)}"', "Accept-Ranges": "bytes"})

    def _send_file(self, repo: FakeRepo, path: str, headers: dict[str, str]) -> None:
        content = repo.files[path]
        size = len(content)
        requested = self.headers.get("Range") if self.hub.honor_range else None
        kind = "whole" if not requested else "resumed" if not requested.strip().startswith("bytes=0-") else "ranged"
        fault = self.hub._take_fault(repo.repo_id, path, kind=kind) if self.command == "GET" else None
        if fault is not None and fault.status is not None:
            self._error(fault.status, None, f"fault injected: {fault.status}", file=path)
            return
        start, end = 0, size - 1
        status = 200
        if requested:
            match = _RANGE.match(requested.strip())
            if match is None or int(match[1]) >= size:
                self._error(416, None, "Range not satisfiable", {"Content-Range": f"bytes */{size}"}, file=path)
                return
            start = int(match[1])
            end = min(int(match[2]), size - 1) if match[2] else size - 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length + (fault.length_off_by if fault is not None else 0)))
        self.end_headers()
        self._log(status, path)
        if self.command == "HEAD":
            return
        body = memoryview(content)[start : end + 1]
        if fault is not None and fault.corrupt:
            middle = size // 2
            if start <= middle <= end:
                damaged = bytearray(body)
                damaged[middle - start] ^= 0xFF
                body = memoryview(bytes(damaged))
        self.hub._count_transfers(+1)
        try:
            self._stream(repo.repo_id, path, body, fault)
        finally:
            self.hub._count_transfers(-1)

    def _stream(self, repo_id: str, path: str, body: memoryview, fault: Fault | None) -> None:
        if fault is not None and fault.trickle_s is not None:
            generation = self.hub.counter_generation
            self._trickle(body, fault.trickle_s, lambda n: self.hub._count(repo_id, path, n, generation))
            return
        sent = 0
        began = time.monotonic()
        rate = self.hub.rate_bytes_per_s
        generation = self.hub.counter_generation
        chunk = _CHUNK if rate is None else max(4096, min(_CHUNK, int(rate / 20)))
        while sent < len(body):
            limit = len(body)
            if fault is not None and fault.drop_after is not None:
                limit = min(limit, fault.drop_after)
            if fault is not None and fault.stall_after is not None and sent >= fault.stall_after:
                self.hub._stopping.wait(fault.stall_s)
                fault = None  # after the stall, the rest flows (if the client still listens)
                continue
            if fault is not None and fault.stall_after is not None:
                limit = min(limit, fault.stall_after)
            if sent >= limit:
                # Dropped: close without sending the rest; the client sees a short body.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            piece = body[sent : min(sent + chunk, limit)]
            if self._client_gone():
                # A killed client: the write below would still succeed once (into the socket's buffer,
                # before the reset comes back) and count bytes nobody will ever receive.
                self.close_connection = True
                return
            # Counted before writing, so a client that has read the bytes also sees them counted.
            self.hub._count(repo_id, path, len(piece), generation)
            try:
                self.wfile.write(piece)
            except OSError:
                self.hub._count(repo_id, path, -len(piece), generation)
                raise
            sent += len(piece)
            if rate is not None and sent < len(body):  # no wait after the last byte: the transfer is over
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)

    def _client_gone(self) -> bool:
        """The client closed its end (clients send nothing more while a body streams to them)."""
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[0].lower() in ("1", "true", "yes")


@pytest.fixture(name="fake_hub")
def fake_hub_fixture() -> Iterator[FakeHub]:
    """A started ``FakeHub`` with no repos; stopped after the test."""
    with FakeHub() as hub:
        yield hub

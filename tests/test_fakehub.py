"""The fake Hub speaks what huggingface_hub 2.4.0 expects, and its switches do what they say.

huggingface_hub runs in subprocesses (it reads HF_ENDPOINT at import); raw HTTP checks use
http.client in this process.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakehub import FakeHub, Fault, fake_hub_fixture, git_blob_sha1  # noqa: F401  (fixture)

REPO = "unsloth/Fake-GGUF"
SHARD = "Q4/Fake-Q4-00001-of-00002.gguf"
FILES = {
    SHARD: os.urandom(300_000),
    "Q4/Fake-Q4-00002-of-00002.gguf": os.urandom(200_000),
    "Q8/Fake-Q8.gguf": os.urandom(100_000),
    "README.md": b"# fake\n",
}


def run_hf(hub: FakeHub, home: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=hub.env(home, **env), capture_output=True, text=True, timeout=60, check=False
    )


def request(
    url: str, path: str, *, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[http.client.HTTPResponse, bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = b"" if method == "HEAD" else response.read()
    connection.close()
    return response, body


def test_the_api_lists_files_with_sizes_and_lfs_sha256_across_pages(tmp_path: Path) -> None:
    with FakeHub(tree_page_size=2) as hub:
        repo = hub.add_repo(REPO, FILES)
        code = f"""
import json
from huggingface_hub import HfApi
api = HfApi()
info = api.model_info({REPO!r}, files_metadata=True)
tree = list(api.list_repo_tree({REPO!r}, recursive=True))
sub = list(api.list_repo_tree({REPO!r}, path_in_repo="Q4"))
print(json.dumps({{
    "sha": info.sha,
    "siblings": {{s.rfilename: [s.size, s.lfs.sha256 if s.lfs else None] for s in info.siblings}},
    "tree": {{f.path: [getattr(f, "size", None), f.lfs.sha256 if getattr(f, "lfs", None) else None] for f in tree}},
    "sub": sorted(f.path for f in sub),
}}))
"""
        result = run_hf(hub, tmp_path, code)
        tree_requests = [r for r in hub.requests if "/tree/" in r.path]

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["sha"] == repo.sha
    for path, content in FILES.items():
        lfs = hashlib.sha256(content).hexdigest() if repo.is_lfs(path) else None
        assert listed["siblings"][path] == [len(content), lfs]
        assert listed["tree"][path] == [len(content), lfs]
    assert {"Q4", "Q8"} <= set(listed["tree"])  # folders are listed too
    assert listed["sub"] == sorted(p for p in FILES if p.startswith("Q4/"))
    assert len(tree_requests) > 3  # the recursive listing came in pages of two


def test_hf_hub_download_and_snapshot_download_work_against_it(fake_hub: FakeHub, tmp_path: Path) -> None:
    repo = fake_hub.add_repo(REPO, FILES)
    code = f"""
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
meta = get_hf_file_metadata(hf_hub_url({REPO!r}, {SHARD!r}))
print(meta.commit_hash, meta.etag, meta.size, meta.location)
print(hf_hub_download({REPO!r}, {SHARD!r}))
print(snapshot_download({REPO!r}, allow_patterns=["Q4/*", "README.md"]))
"""
    result = run_hf(fake_hub, tmp_path, code)

    assert result.returncode == 0, result.stderr
    metadata, single, snapshot = result.stdout.splitlines()
    commit, etag, size, location = metadata.split()
    assert (commit, etag, int(size)) == (repo.sha, repo.sha256_of(SHARD), len(FILES[SHARD]))
    assert location.startswith(fake_hub.cdn_url + "/lfs/")  # redirected like the real Hub's LFS files
    assert Path(single).read_bytes() == FILES[SHARD]
    assert Path(snapshot).is_dir() and Path(snapshot).name == repo.sha
    assert (Path(snapshot) / "README.md").read_bytes() == FILES["README.md"]
    assert not (Path(snapshot) / "Q8").exists()


def test_errors_reach_huggingface_hub_as_its_own_exceptions(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.add_repo("nvidia/Gated-GGUF", FILES, gated=True, tokens_with_access={"hf_yes"})
    code = f"""
from huggingface_hub import HfApi, hf_hub_download
def name(call):
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "ok"
api = HfApi()
print(name(lambda: api.model_info("unsloth/Missing")))
print(name(lambda: api.model_info({REPO!r}, revision="nope")))
print(name(lambda: hf_hub_download({REPO!r}, "Q4/missing.gguf")))
print(name(lambda: hf_hub_download("nvidia/Gated-GGUF", {SHARD!r})))
print(name(lambda: hf_hub_download("nvidia/Gated-GGUF", {SHARD!r}, token="hf_no")))
print(name(lambda: hf_hub_download("nvidia/Gated-GGUF", {SHARD!r}, token="hf_yes")))
"""
    result = run_hf(fake_hub, tmp_path, code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "RemoteEntryNotFoundError",
        "GatedRepoError",
        "GatedRepoError",
        "ok",
    ]
    statuses = [r.status for r in fake_hub.requests if r.path.startswith("/nvidia/") and r.method == "HEAD"]
    assert statuses[:2] == [401, 403]


def test_resolve_serves_ranges_and_the_headers_huggingface_hub_reads() -> None:
    with FakeHub(redirect_lfs=False) as hub:
        repo = hub.add_repo(REPO, FILES)
        head, _ = request(hub.url, f"/{REPO}/resolve/main/{SHARD}", method="HEAD")
        part, body = request(hub.url, f"/{REPO}/resolve/main/{SHARD}", headers={"Range": "bytes=1000-"})
        beyond, _ = request(hub.url, f"/{REPO}/resolve/main/{SHARD}", headers={"Range": "bytes=999999-"})
        readme, _ = request(hub.url, f"/{REPO}/resolve/{repo.sha}/README.md", method="HEAD")

    assert head.status == 200
    assert head.getheader("X-Repo-Commit") == repo.sha
    assert head.getheader("X-Linked-Etag") == f'"{repo.sha256_of(SHARD)}"'
    assert head.getheader("X-Linked-Size") == head.getheader("Content-Length") == str(len(FILES[SHARD]))
    assert head.getheader("X-Xet-Hash") is None
    assert part.status == 206
    assert part.getheader("Content-Range") == f"bytes 1000-{len(FILES[SHARD]) - 1}/{len(FILES[SHARD])}"
    assert body == FILES[SHARD][1000:]
    assert beyond.status == 416
    assert readme.getheader("ETag") == f'"{git_blob_sha1(FILES["README.md"])}"'


def test_faults_and_counters(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    path = f"/lfs/{hashlib.sha256(FILES[SHARD]).hexdigest()}"
    fake_hub.add_fault(REPO, SHARD, Fault(drop_after=1000))
    fake_hub.add_fault(REPO, SHARD, Fault(corrupt=True))
    fake_hub.add_fault(REPO, SHARD, Fault(status=503))

    with pytest.raises(http.client.IncompleteRead) as dropped:
        request(fake_hub.cdn_url, path)
    _, corrupted = request(fake_hub.cdn_url, path)
    refused, _ = request(fake_hub.cdn_url, path, headers={"Range": "bytes=5-"})
    _, clean = request(fake_hub.cdn_url, path)

    assert len(dropped.value.partial) == 1000
    assert len(corrupted) == len(FILES[SHARD]) and corrupted != FILES[SHARD]
    assert refused.status == 503
    assert clean == FILES[SHARD]
    assert fake_hub.served(REPO, SHARD) == 1000 + 2 * len(FILES[SHARD])
    assert [(r.status, r.range) for r in fake_hub.gets_of(SHARD)] == [
        (200, None),
        (200, None),
        (503, "bytes=5-"),
        (200, None),
    ]


def test_a_stall_sends_nothing_for_its_duration(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.add_fault(REPO, SHARD, Fault(stall_after=10_000, stall_s=1.0))
    began = time.monotonic()

    _, body = request(fake_hub.cdn_url, f"/lfs/{hashlib.sha256(FILES[SHARD]).hexdigest()}")

    assert body == FILES[SHARD]
    assert time.monotonic() - began >= 1.0


def test_the_throttle_paces_a_transfer(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.rate_bytes_per_s = 1_000_000
    began = time.monotonic()

    request(fake_hub.cdn_url, f"/lfs/{hashlib.sha256(FILES[SHARD]).hexdigest()}")

    # A lower bound only: the server sleeps to stay under the rate, so no load can make it faster.
    assert time.monotonic() - began >= 0.25


def test_huggingface_hub_alone_restarts_a_killed_download_from_zero(fake_hub: FakeHub, tmp_path: Path) -> None:
    """What nemolaunch's downloader makes up for (huggingface_hub 2.4.0; if this starts failing, re-check)."""
    content = os.urandom(24 * 1024 * 1024)
    repo = fake_hub.add_repo(REPO, {SHARD: content})
    fake_hub.rate_bytes_per_s = 12_000_000
    code = f"from huggingface_hub import hf_hub_download; hf_hub_download({REPO!r}, {SHARD!r})"
    process = subprocess.Popen([sys.executable, "-c", code], env=fake_hub.env(tmp_path))
    try:
        deadline = time.monotonic() + 30
        blobs = tmp_path / "hub" / "models--unsloth--Fake-GGUF" / "blobs"
        # It writes in 10 MiB steps: wait until one has reached the disk.
        while time.monotonic() < deadline and not any(p.stat().st_size for p in blobs.glob("*.incomplete")):
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    (orphan,) = blobs.glob("*.incomplete")
    assert orphan.name.startswith(repo.sha256_of(SHARD) + ".")  # <sha256>.<8 random hex>.incomplete
    fake_hub.rate_bytes_per_s = None
    fake_hub.reset_counters()

    again = run_hf(fake_hub, tmp_path, code)

    assert again.returncode == 0, again.stderr
    assert [r.range for r in fake_hub.gets_of(SHARD)] == [None]  # from zero
    assert fake_hub.served(REPO, SHARD) >= len(content)
    assert orphan.exists()  # and the killed run's partial file stays behind

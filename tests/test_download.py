"""Downloads from the Hub, on real HTTP against tests/fakehub.py, each in its own process.

Each download runs ``tests/download_driver.py`` in a subprocess whose environment names the fake hub
(huggingface_hub reads HF_ENDPOINT once, at import). Files are a few MB, served over loopback;
where a test must catch a transfer half way, the hub is throttled to a few MB/s.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nemolaunch import errors

from conftest import run_nemolaunch, sigint_default
from fakehub import FakeHub, FakeRepo, Fault, fake_commit_sha, fake_hub_fixture, gguf_shard  # noqa: F401  (fixture)

DRIVER = Path(__file__).with_name("download_driver.py")
REPO = "unsloth/Tiny-Nemotron-GGUF"
QUANT = "UD-IQ3_XXS"
OTHER_QUANT = "Q8_0"


# --- test data ----------------------------------------------------------------------------------
def quant_files(quant: str, count: int, payload_bytes: int) -> dict[str, bytes]:
    stem = f"{quant}/Tiny-Nemotron-{quant}"
    return {f"{stem}-{i:05d}-of-{count:05d}.gguf": gguf_shard(i, count, payload_bytes) for i in range(1, count + 1)}


def add_standard_repo(hub: FakeHub, *, payload_bytes: int = 1_000_000, **options: object) -> FakeRepo:
    files = {
        **quant_files(QUANT, 3, payload_bytes),
        **quant_files(OTHER_QUANT, 2, 200_000),
        "README.md": b"# Tiny Nemotron\n",
    }
    return hub.add_repo(REPO, files, **options)  # type: ignore[arg-type]


def wanted(repo: FakeRepo, folder: str = QUANT) -> list[list[object]]:
    """The driver's ``files`` argument: [path, size, sha256] of the files under ``folder``."""
    return [
        [path, repo.size_of(path), repo.sha256_of(path)] for path in sorted(repo.files) if path.startswith(folder + "/")
    ]


# --- running the driver -----------------------------------------------------------------------------
@dataclass
class DriverRun:
    returncode: int
    lines: list[dict[str, object]]
    stderr: str

    def events(self, name: str) -> list[dict[str, object]]:
        return [line for line in self.lines if line.get("event") == name]

    @property
    def result(self) -> dict[str, object]:
        found = [line["result"] for line in self.lines if "result" in line]
        assert found, f"no result (exit {self.returncode}): {self.lines[-3:]} {self.stderr[-2000:]}"
        return found[0]  # type: ignore[return-value]

    @property
    def error(self) -> dict[str, object]:
        found = [line for line in self.lines if "error" in line]
        assert found, f"no error (exit {self.returncode}): {self.lines[-3:]} {self.stderr[-2000:]}"
        return found[0]


def driver_env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    return hub.env(home, PYTHONUNBUFFERED="1", **extra)


def run_driver(
    hub: FakeHub, home: Path, args: dict[str, object], *, command: str = "download", timeout: float = 60, **env: str
) -> DriverRun:
    completed = subprocess.run(
        [sys.executable, str(DRIVER), command, json.dumps(args)],
        env=driver_env(hub, home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return DriverRun(completed.returncode, lines, completed.stderr)


class LiveDriver:
    """A driver process whose events are read as they come, so a test can kill it mid-file."""

    def __init__(self, hub: FakeHub, home: Path, args: dict[str, object], **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(DRIVER), "download", json.dumps(args)],
            env=driver_env(hub, home, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=sigint_default,
        )
        self.lines: list[dict[str, object]] = []
        self._inbox: queue.Queue[dict[str, object] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self._inbox.put(json.loads(line))
        self._inbox.put(None)

    def wait_for(self, predicate: Callable[[dict[str, object]], bool], timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the driver ended first: {self.lines[-3:]}")
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"timed out; last lines: {self.lines[-3:]}")

    def finish(self, timeout: float = 30) -> DriverRun:
        self.process.wait(timeout=timeout)
        while (line := self._inbox.get(timeout=timeout)) is not None:
            self.lines.append(line)
        assert self.process.stderr is not None
        return DriverRun(self.process.returncode, self.lines, self.process.stderr.read())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)


def progress_at_least(path: str, done: int) -> Callable[[dict[str, object]], bool]:
    return lambda line: line.get("event") == "FileProgress" and line["path"] == path and int(line["done"]) >= done  # type: ignore[call-overload]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "hf-home"


@pytest.fixture
def live_drivers() -> Iterator[list[LiveDriver]]:
    started: list[LiveDriver] = []
    yield started
    for driver in started:
        if driver.process.poll() is None:
            driver.process.kill()
            driver.process.wait(timeout=10)


def storage(home: Path) -> Path:
    return home / "hub" / ("models--" + REPO.replace("/", "--"))


def snapshot_file(home: Path, repo: FakeRepo, path: str) -> Path:
    return storage(home) / "snapshots" / repo.sha / path


def blob(home: Path, repo: FakeRepo, path: str) -> Path:
    return storage(home) / "blobs" / repo.sha256_of(path)


def partial(home: Path, repo: FakeRepo, path: str) -> Path:
    return storage(home) / "blobs" / f"{repo.sha256_of(path)}.incomplete"


def assert_quant_in_cache(home: Path, repo: FakeRepo, folder: str = QUANT) -> None:
    for path, _, _ in wanted(repo, folder):
        local = snapshot_file(home, repo, str(path))
        assert local.is_symlink(), f"{local} is not linked into the snapshot"
        assert local.read_bytes() == repo.files[str(path)]


# --- the right files, and only those ------------------------------------------------------------
def test_fetches_exactly_the_requested_shards_into_the_shared_cache(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == 0, run.lines[-3:]
    assert_quant_in_cache(home, repo)
    fetched = {record.file for record in fake_hub.requests if record.method == "GET" and record.file}
    assert fetched == {str(path) for path, _, _ in wanted(repo)}
    assert (storage(home) / "refs" / "main").read_text() == repo.sha
    assert run.result["commit"] == repo.sha
    assert run.result["files"] == {str(p): str(snapshot_file(home, repo, str(p))) for p, _, _ in wanted(repo)}
    planned = run.events("DownloadPlanned")[0]
    assert planned["total_bytes"] == sum(int(size) for _, size, _ in wanted(repo))  # type: ignore[call-overload]
    assert planned["on_disk_bytes"] == 0
    assert len(run.events("FileVerified")) == 3
    assert not list((storage(home) / "blobs").glob("*.incomplete"))


def test_a_second_run_fetches_nothing_and_hashes_nothing(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    assert run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)}).returncode == 0
    fake_hub.reset_counters()

    again = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert again.returncode == 0
    assert not fake_hub.gets_of(str(wanted(repo)[0][0]))
    assert [event["from_record"] for event in again.events("FileVerified")] == [True, True, True]
    assert again.result["fetched_bytes"] == 0


def test_local_dir_gets_the_layout_of_hf_download_local_dir(fake_hub: FakeHub, tmp_path: Path, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    target = tmp_path / "models"
    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo), "local_dir": str(target)})

    assert run.returncode == 0, run.lines[-3:]
    for path, _, sha256 in wanted(repo):
        assert (target / str(path)).read_bytes() == repo.files[str(path)]
        metadata = target / ".cache" / "huggingface" / "download" / f"{path}.metadata"
        assert metadata.read_text().split("\n")[:2] == [repo.sha, sha256]
    assert not (home / "hub").exists()  # nothing went to the shared cache
    fake_hub.reset_counters()
    # huggingface_hub recognises the files as its own: no byte fetched, no re-hash needed.
    first = str(wanted(repo)[0][0])
    code = (
        "from huggingface_hub import hf_hub_download\n"
        f"print(hf_hub_download({REPO!r}, {first!r}, local_dir={str(target)!r}))"
    )
    hf = subprocess.run([sys.executable, "-c", code], env=driver_env(fake_hub, home), capture_output=True, text=True)
    assert hf.returncode == 0, hf.stderr
    assert Path(hf.stdout.strip()) == target / first
    assert not fake_hub.gets_of(first)


# --- resuming after a kill -------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["cache", "local_dir"])
def test_a_download_killed_at_half_resumes_from_the_bytes_on_disk(
    fake_hub: FakeHub, home: Path, tmp_path: Path, live_drivers: list[LiveDriver], layout: str
) -> None:
    repo = fake_hub.add_repo(REPO, quant_files(QUANT, 1, 4_000_000))
    ((path, size, _),) = wanted(repo)
    args: dict[str, object] = {"repo_id": REPO, "files": wanted(repo)}
    if layout == "local_dir":
        args["local_dir"] = str(tmp_path / "models")
    fake_hub.rate_bytes_per_s = 4_000_000
    first = LiveDriver(fake_hub, home, args)
    live_drivers.append(first)
    first.wait_for(progress_at_least(str(path), int(size) // 2))  # type: ignore[call-overload]
    first.kill()
    first.process.wait(timeout=10)
    served_before = fake_hub.served(REPO, str(path))
    fake_hub.rate_bytes_per_s = None

    second = run_driver(fake_hub, home, args)

    assert second.returncode == 0, second.lines[-3:]
    local = Path(str(second.result["files"][path]))  # type: ignore[index]
    assert local.read_bytes() == repo.files[str(path)]
    resumed_from = int(second.events("FileStarted")[0]["resume_from"])  # type: ignore[call-overload]
    assert resumed_from >= int(size) // 2  # type: ignore[call-overload]
    assert fake_hub.gets_of(str(path))[-1].range == f"bytes={resumed_from}-"
    fetched_twice = fake_hub.served(REPO, str(path)) - int(size)  # type: ignore[call-overload]
    assert fetched_twice < 512 * 1024, f"{fetched_twice} bytes crossed the wire twice"
    assert served_before >= resumed_from


def test_partial_files_huggingface_hub_left_behind_are_removed(
    fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]
) -> None:
    repo = fake_hub.add_repo(REPO, quant_files(QUANT, 1, 2_000_000))
    ((path, size, _),) = wanted(repo)
    orphan = blob(home, repo, str(path)).with_name(f"{repo.sha256_of(str(path))}.0d7eac01.incomplete")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(repo.files[str(path)][: int(size) // 3])  # type: ignore[call-overload]

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == 0
    assert not orphan.exists()
    assert run.events("OrphansRemoved")[0]["paths"] == [str(orphan)]


def test_twenty_kill_and_resume_cycles_lose_nothing(
    fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]
) -> None:
    repo = fake_hub.add_repo(REPO, quant_files(QUANT, 1, 16_000_000))
    ((path, size, _),) = wanted(repo)
    # One connection, one stream (kills amid several pieces: test_a_kill_mid_piece_loses_only_what_was_in_flight).
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 1}
    # Progress is reported every 0.2 s: at 1.5 MB/s each run gets 300-600 kB further before its kill.
    fake_hub.rate_bytes_per_s = 1_500_000
    step = 300_000
    reached = 0
    for _ in range(20):
        driver = LiveDriver(fake_hub, home, args)
        live_drivers.append(driver)
        line = driver.wait_for(progress_at_least(str(path), reached + step))
        reached = int(line["done"])  # type: ignore[call-overload]
        driver.kill()
        driver.process.wait(timeout=10)
        on_disk = partial(home, repo, str(path)).stat().st_size
        assert on_disk >= reached, "bytes reported as written are on disk after the kill"
        assert not blob(home, repo, str(path)).exists()
    fake_hub.rate_bytes_per_s = None

    final = run_driver(fake_hub, home, args)

    assert final.returncode == 0, final.lines[-3:]
    assert snapshot_file(home, repo, str(path)).read_bytes() == repo.files[str(path)]
    fetched_twice = fake_hub.served(REPO, str(path)) - int(size)  # type: ignore[call-overload]
    # Each kill may lose what was in flight (socket buffers, one read): far less than a restart.
    assert fetched_twice < 20 * 256 * 1024, f"{fetched_twice} bytes crossed the wire twice in 20 kills"
    assert len(fake_hub.gets_of(str(path))) == 21


def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(
    fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]
) -> None:
    repo = fake_hub.add_repo(REPO, quant_files(QUANT, 2, 2_000_000))
    paths = [str(p) for p, _, _ in wanted(repo)]
    fake_hub.rate_bytes_per_s = 2_000_000
    driver = LiveDriver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})
    live_drivers.append(driver)
    # Both files, each on its own connection, may start a moment apart: wait for each.
    driver.wait_for(progress_at_least(paths[0], 600_000))
    driver.wait_for(progress_at_least(paths[1], 600_000))

    driver.kill(signal.SIGINT)
    stopped = driver.finish()

    assert stopped.returncode == errors.EXIT_INTERRUPTED
    assert stopped.error["error"] == "DownloadInterrupted"
    assert "run the same command again" in str(stopped.error["message"])
    for path in paths:  # nothing under a final name, something to resume from
        assert not blob(home, repo, path).exists()
        assert not snapshot_file(home, repo, path).exists()
    assert partial(home, repo, paths[0]).stat().st_size >= 600_000
    fake_hub.rate_bytes_per_s = None

    again = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert again.returncode == 0
    assert_quant_in_cache(home, repo)
    assert int(again.events("DownloadPlanned")[0]["on_disk_bytes"]) >= 1_200_000  # type: ignore[call-overload]


# --- integrity --------------------------------------------------------------------------------------------
def test_a_corrupted_transfer_is_found_and_fetched_again(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    damaged = str(wanted(repo)[1][0])
    fake_hub.add_fault(REPO, damaged, Fault(corrupt=True, times=1))

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == 0, run.lines[-3:]
    assert [event["path"] for event in run.events("ChecksumRefetch")] == [damaged]
    assert len(fake_hub.gets_of(damaged)) == 2
    assert_quant_in_cache(home, repo)


def test_a_file_corrupted_every_time_fails_clearly_and_leaves_nothing_under_its_name(
    fake_hub: FakeHub, home: Path
) -> None:
    repo = add_standard_repo(fake_hub)
    damaged = str(wanted(repo)[0][0])
    fake_hub.add_fault(REPO, damaged, Fault(corrupt=True, times=None))

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == errors.EXIT_INTEGRITY
    assert run.error["error"] == "ChecksumMismatch"
    assert damaged in str(run.error["message"]) and repo.sha256_of(damaged) in str(run.error["message"])
    assert len(fake_hub.gets_of(damaged)) == 2  # fetched again once, not forever
    assert not blob(home, repo, damaged).exists()
    assert not partial(home, repo, damaged).exists()
    assert not snapshot_file(home, repo, damaged).exists()


def test_verify_hashes_again_what_the_record_trusts(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    args: dict[str, object] = {"repo_id": REPO, "files": wanted(repo)}
    assert run_driver(fake_hub, home, args).returncode == 0
    path = str(wanted(repo)[2][0])
    stored = blob(home, repo, path)
    before = stored.stat()
    content = bytearray(stored.read_bytes())
    content[-1] ^= 0xFF  # damage that keeps size and mtime: invisible to the record
    stored.write_bytes(bytes(content))
    os.utime(stored, ns=(before.st_atime_ns, before.st_mtime_ns))

    trusted = run_driver(fake_hub, home, args)
    assert trusted.returncode == 0
    assert all(event["from_record"] for event in trusted.events("FileVerified"))

    checked = run_driver(fake_hub, home, {**args, "verify": True})
    assert checked.returncode == 0, checked.lines[-3:]
    assert [event["path"] for event in checked.events("ChecksumRefetch")] == [path]
    assert snapshot_file(home, repo, path).read_bytes() == repo.files[path]


def test_a_changed_file_is_hashed_again_without_being_asked(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    args: dict[str, object] = {"repo_id": REPO, "files": wanted(repo)}
    assert run_driver(fake_hub, home, args).returncode == 0
    path = str(wanted(repo)[0][0])
    stored = blob(home, repo, path)
    content = bytearray(stored.read_bytes())
    content[100] ^= 0xFF
    stored.write_bytes(bytes(content))  # new mtime: the record no longer vouches for it

    run = run_driver(fake_hub, home, args)

    assert run.returncode == 0
    assert [event["path"] for event in run.events("ChecksumRefetch")] == [path]
    assert stored.read_bytes() == repo.files[path]


def test_a_header_that_disagrees_with_the_split_name_is_refused(fake_hub: FakeHub, home: Path) -> None:
    files = quant_files(QUANT, 2, 100_000)
    second = sorted(files)[1]
    files[second] = gguf_shard(2, 2, 100_000, header_count=3)
    repo = fake_hub.add_repo(REPO, files)

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == errors.EXIT_INTEGRITY
    assert run.error["error"] == "SplitCountMismatch"
    assert second in str(run.error["message"])


def test_a_request_missing_a_part_of_a_split_set_is_refused_before_any_request(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)[:2]})

    assert run.returncode == errors.EXIT_INTEGRITY
    assert run.error["error"] == "SplitSetIncomplete"
    assert "00003-of-00003" in str(run.error["message"])
    assert not fake_hub.requests


# --- before the first byte ---------------------------------------------------------------------------------
def test_a_listing_larger_than_the_free_space_is_refused(fake_hub: FakeHub, home: Path) -> None:
    # The listing claims a petabyte (its real bytes are small and never asked for): the real free space of
    # this machine's disk is measured, so the check itself runs as in production.
    files = quant_files(QUANT, 1, 1000)
    (path,) = files
    repo = fake_hub.add_repo(REPO, files, declared_sizes={path: 10**15})

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == errors.EXIT_ENVIRONMENT
    assert run.error["error"] == "NotEnoughDisk"
    message = str(run.error["message"])
    assert "needs 1000.0 TB more" in message and "free" in message and str(home.parent) in message
    assert not fake_hub.gets_of(path)


def test_the_margin_is_part_of_the_disk_check(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub, payload_bytes=1000)
    import shutil

    # The files (a few KB) fit; with the margin they do not. The margin is the free space plus 1 GiB, so
    # another process freeing disk meanwhile (a shared machine) cannot make them fit.
    margin = shutil.disk_usage(home.parent).free + 2**30
    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo), "disk_margin_bytes": margin})

    assert run.returncode == errors.EXIT_ENVIRONMENT
    assert run.error["error"] == "NotEnoughDisk"


def test_a_gated_repo_without_a_token_says_how_to_log_in(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub, gated=True, tokens_with_access={"hf_granted"})

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == errors.EXIT_HUB
    assert run.error["error"] == "GatedRepoNeedsToken"
    assert "hf auth login" in str(run.error["message"]) and "HF_TOKEN" in str(run.error["message"])
    assert not [record for record in fake_hub.requests if record.file]


def test_a_token_without_access_to_a_gated_repo_is_told_so(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub, gated=True, tokens_with_access={"hf_granted"})

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)}, HF_TOKEN="hf_other")

    assert run.returncode == errors.EXIT_HUB
    assert run.error["error"] == "GatedRepoNoAccess"
    assert "hf_other" not in json.dumps(run.lines) + run.stderr  # the token is never printed
    assert not [record for record in fake_hub.requests if record.method == "GET" and record.file]


def test_a_gated_repo_downloads_with_a_token_that_never_reaches_the_cdn(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub, gated=True, tokens_with_access={"hf_granted"})

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo), "token": "hf_granted"})

    assert run.returncode == 0, run.lines[-3:]
    assert_quant_in_cache(home, repo)
    assert all(record.authorized for record in fake_hub.requests if record.server == "hub")
    assert not any(record.authorized for record in fake_hub.requests if record.server == "cdn")
    assert "hf_granted" not in json.dumps(run.lines) + run.stderr


def test_an_unknown_repo_is_named(fake_hub: FakeHub, home: Path) -> None:
    run = run_driver(fake_hub, home, {"repo_id": "unsloth/Nope-GGUF", "files": []})
    assert run.returncode == errors.EXIT_NOT_FOUND
    assert run.error["error"] == "HubRepoNotFound"
    assert "unsloth/Nope-GGUF" in str(run.error["message"])


def test_an_unknown_revision_is_named(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    run = run_driver(fake_hub, home, {"repo_id": REPO, "revision": "v9", "files": wanted(repo)})
    assert run.returncode == errors.EXIT_NOT_FOUND
    assert run.error["error"] == "HubRevisionNotFound"


def test_an_unknown_file_lists_what_its_folder_holds(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    missing = f"{QUANT}/Tiny-Nemotron-{QUANT}-00001-of-00001.gguf"

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": [[missing, 10, "a" * 64]]})

    assert run.returncode == errors.EXIT_NOT_FOUND
    assert run.error["error"] == "HubFileNotFound"
    message = str(run.error["message"])
    assert missing in message and str(wanted(repo)[0][0]) in message


@pytest.mark.parametrize(
    "name",
    ["../evil.gguf", "UD-IQ3_XXS/../../evil.gguf", "/etc/evil.gguf", "UD-IQ3_XXS\\..\\..\\evil.gguf", "C:evil.gguf"],
)
def test_file_names_that_would_escape_the_target_are_refused(
    fake_hub: FakeHub, home: Path, tmp_path: Path, name: str
) -> None:
    repo = fake_hub.add_repo(REPO, {name: b"x" * 1000, "README.md": b"hi"})
    # The listing itself is refused (so a plan, which reads a header, refuses it as a download does)...
    listing = run_driver(fake_hub, home, {"repo_id": REPO}, command="list")
    assert listing.returncode == errors.EXIT_HUB and listing.error["error"] == "UnsafeRepoPath"
    # ...and so are the files, named to download_quant directly.
    files = [[name, 1000, repo.sha256_of(name)]]
    before = sorted(p for p in tmp_path.rglob("*"))

    for target in ({}, {"local_dir": str(tmp_path / "models")}):
        run = run_driver(fake_hub, home, {"repo_id": REPO, "files": files, **target})
        assert run.returncode == errors.EXIT_HUB
        assert run.error["error"] == "UnsafeRepoPath"
        assert repr(name) in str(run.error["message"])
    assert not [record for record in fake_hub.requests if record.file]
    assert sorted(p for p in tmp_path.rglob("*")) == before


# --- unreliable transfers ------------------------------------------------------------------------------------
def test_a_stalled_transfer_is_retried_from_the_bytes_on_disk(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    stalled = str(wanted(repo)[0][0])
    # The stall outlasts the driver's own timeout: only giving up on the silent connection can finish in time.
    fake_hub.add_fault(REPO, stalled, Fault(stall_after=400_000, stall_s=600))

    run = run_driver(
        fake_hub, home, {"repo_id": REPO, "files": wanted(repo), "stall_timeout_s": 1, "retry_wait_s": 0.1}
    )

    assert run.returncode == 0, run.lines[-3:]
    retry = run.events("FileRetrying")[0]
    assert retry["path"] == stalled and "no bytes for 1 s" in str(retry["reason"])
    assert fake_hub.gets_of(stalled)[-1].range == f"bytes={retry['resume_from']}-"
    assert int(retry["resume_from"]) >= 256 * 1024  # type: ignore[call-overload]
    assert_quant_in_cache(home, repo)


def test_a_dropped_connection_resumes_with_a_range(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    dropped = str(wanted(repo)[2][0])
    fake_hub.add_fault(REPO, dropped, Fault(drop_after=300_000, times=2))

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo), "retry_wait_s": 0.05})

    assert run.returncode == 0, run.lines[-3:]
    assert [record.range for record in fake_hub.gets_of(dropped)] == [None, "bytes=300000-", "bytes=600000-"]
    assert fake_hub.served(REPO, dropped) == len(repo.files[dropped])


def test_server_errors_are_retried_then_reported(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    flaky, broken = str(wanted(repo)[0][0]), str(wanted(repo)[1][0])
    fake_hub.add_fault(REPO, flaky, Fault(status=503, times=2))
    fake_hub.add_fault(REPO, broken, Fault(status=500, times=None))

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo), "retry_wait_s": 0.01})

    assert run.returncode == errors.EXIT_HUB
    assert run.error["error"] == "DownloadFailed"
    assert broken in str(run.error["message"]) and "500" in str(run.error["message"])
    assert snapshot_file(home, repo, flaky).read_bytes() == repo.files[flaky]  # the others were let finish


def test_a_refusal_is_not_retried(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    gone = str(wanted(repo)[0][0])
    fake_hub.add_fault(REPO, gone, Fault(status=404, times=None))

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == errors.EXIT_HUB
    assert run.error["error"] == "HubRequestFailed" and "404" in str(run.error["message"])
    assert len(fake_hub.gets_of(gone)) == 1


def test_xet_trouble_falls_back_to_plain_http(fake_hub: FakeHub, home: Path) -> None:
    pytest.importorskip("hf_xet")
    repo = add_standard_repo(fake_hub, xet_broken=True)
    env = {key: value for key, value in driver_env(fake_hub, home).items() if key != "HF_HUB_DISABLE_XET"}

    args = {"repo_id": REPO, "files": wanted(repo), "prefer_xet": True}
    completed = subprocess.run(
        [sys.executable, str(DRIVER), "download", json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    run = DriverRun(completed.returncode, [json.loads(x) for x in completed.stdout.splitlines()], completed.stderr)

    assert run.returncode == 0, run.lines[-3:]
    assert sorted(str(event["path"]) for event in run.events("XetFallback")) == [str(p) for p, _, _ in wanted(repo)]
    assert_quant_in_cache(home, repo)


# --- offline ---------------------------------------------------------------------------------------------
def test_offline_uses_the_cache_and_names_what_is_missing(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    assert run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)}).returncode == 0
    fake_hub.reset_counters()

    cached = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)}, HF_HUB_OFFLINE="1")
    absent = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo, OTHER_QUANT)}, HF_HUB_OFFLINE="1")

    assert cached.returncode == 0, cached.lines[-3:]
    assert cached.result["offline"] is True
    assert "HF_HUB_OFFLINE" in str(cached.events("UsingCache")[0]["reason"])
    assert absent.returncode == errors.EXIT_NOT_FOUND
    assert absent.error["error"] == "FilesMissingOffline"
    for path, _, _ in wanted(repo, OTHER_QUANT):
        assert str(path) in str(absent.error["message"])
    assert not fake_hub.requests


def test_an_unreachable_hub_is_treated_as_offline(
    fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]
) -> None:
    repo = add_standard_repo(fake_hub)
    assert run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)}).returncode == 0
    fake_hub.rate_bytes_per_s = 1_000_000
    driver = LiveDriver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo, OTHER_QUANT)})
    live_drivers.append(driver)
    other = str(wanted(repo, OTHER_QUANT)[0][0])
    driver.wait_for(progress_at_least(other, 50_000))
    driver.kill()
    driver.process.wait(timeout=10)
    closed = f"http://127.0.0.1:{_closed_port()}"

    cached = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)}, HF_ENDPOINT=closed)
    absent = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo, OTHER_QUANT)}, HF_ENDPOINT=closed)

    assert cached.returncode == 0, cached.lines[-3:]
    assert "unreachable" in str(cached.events("UsingCache")[0]["reason"])
    assert absent.returncode == errors.EXIT_NOT_FOUND
    message = str(absent.error["message"])
    assert "unreachable" in message and f"{other} (" in message and "on disk)" in message


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- one cache with huggingface_hub ------------------------------------------------------------------------
def test_what_nemolaunch_fetched_huggingface_hub_does_not_fetch_again(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    assert run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)}).returncode == 0
    fake_hub.reset_counters()
    first = str(wanted(repo)[0][0])
    code = (
        "from huggingface_hub import hf_hub_download, snapshot_download\n"
        f"print(hf_hub_download({REPO!r}, {first!r}))\n"
        f"print(snapshot_download({REPO!r}, allow_patterns=[{QUANT + '/*'!r}]))\n"
    )

    hf = subprocess.run([sys.executable, "-c", code], env=driver_env(fake_hub, home), capture_output=True, text=True)

    assert hf.returncode == 0, hf.stderr
    single, snapshot = hf.stdout.split()
    assert Path(single) == snapshot_file(home, repo, first)
    assert Path(snapshot) == storage(home) / "snapshots" / repo.sha
    assert not [record for record in fake_hub.requests if record.method == "GET" and record.file]


def test_what_huggingface_hub_fetched_nemolaunch_does_not_fetch_again(fake_hub: FakeHub, home: Path) -> None:
    repo = add_standard_repo(fake_hub)
    code = (
        f"from huggingface_hub import snapshot_download\nsnapshot_download({REPO!r}, allow_patterns=[{QUANT + '/*'!r}])"
    )
    hf = subprocess.run([sys.executable, "-c", code], env=driver_env(fake_hub, home), capture_output=True, text=True)
    assert hf.returncode == 0, hf.stderr
    fake_hub.reset_counters()

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})

    assert run.returncode == 0, run.lines[-3:]
    assert run.result["fetched_bytes"] == 0
    assert not [record for record in fake_hub.requests if record.method == "GET" and record.file]
    # Not fetched, but checked: huggingface_hub does not compare sha256.
    assert [event["from_record"] for event in run.events("FileVerified")] == [False, False, False]


# --- several ranged connections per file -------------------------------------------------------------------
MIB = 1024 * 1024


def sidecar(home: Path, repo: FakeRepo, path: str) -> Path:
    return partial(home, repo, path).with_name(partial(home, repo, path).name + ".json")


def one_big_file(hub: FakeHub, mib: int) -> tuple[FakeRepo, str, int]:
    repo = hub.add_repo(REPO, quant_files(QUANT, 1, mib * MIB))
    ((path, size, _),) = wanted(repo)
    return repo, str(path), int(size)  # type: ignore[call-overload]


def test_a_capped_hub_gets_several_connections_per_file_in_ranges(fake_hub: FakeHub, home: Path) -> None:
    # Each connection capped, as a CDN edge caps it: the pieces of one file go over 4 connections at once.
    repo, path, size = one_big_file(fake_hub, 8)
    fake_hub.rate_bytes_per_s = 8_000_000
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 4, "piece_bytes": 2 * MIB}

    run = run_driver(fake_hub, home, args)

    assert run.returncode == 0, run.lines[-3:]
    assert snapshot_file(home, repo, path).read_bytes() == repo.files[path]
    ranges = sorted((record.range or "" for record in fake_hub.gets_of(path)), key=lambda r: int(r[6:].split("-")[0]))
    starts = [index * 2 * MIB for index in range(-(-size // (2 * MIB)))]
    assert ranges == [f"bytes={s}-{s + 2 * MIB - 1}" for s in starts[:-1]] + [f"bytes={starts[-1]}-"]
    assert len(fake_hub.connections_of(path)) == 4
    assert fake_hub.peak_transfers == 4
    assert fake_hub.served(REPO, path) == size  # every byte once
    assert not sidecar(home, repo, path).exists()


def test_a_files_only_connection_asks_for_a_seconds_worth_of_pieces_at_once(fake_hub: FakeHub, home: Path) -> None:
    # One connection in all: it takes every piece, asks for the first alone (its speed unknown), then for
    # as many as it brings in about a second, here the rest of the file (loopback is fast).
    repo, path, size = one_big_file(fake_hub, 8)
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 1, "piece_bytes": MIB}

    run = run_driver(fake_hub, home, args)

    assert run.returncode == 0, run.lines[-3:]
    assert snapshot_file(home, repo, path).read_bytes() == repo.files[path]
    assert [record.range for record in fake_hub.gets_of(path)] == [f"bytes=0-{MIB - 1}", f"bytes={MIB}-"]
    assert fake_hub.served(REPO, path) == size


def test_a_run_is_shared_out_when_another_connection_frees_up(fake_hub: FakeHub, home: Path) -> None:
    # Two connections for a big and a small file: each file's connection is all it gets, so each asks for
    # several pieces at once. When the small one is done, its connection takes the pieces of the big
    # file's run that lie past the request in flight; no request is cut short, no byte comes twice.
    repo = fake_hub.add_repo(REPO, {"Q/big.gguf": gguf_shard(1, 1, 8 * MIB), "Q/small.gguf": gguf_shard(1, 1, 2 * MIB)})
    fake_hub.rate_bytes_per_s = 4_000_000
    args = {"repo_id": REPO, "files": wanted(repo, "Q"), "connections": 2, "piece_bytes": MIB}

    run = run_driver(fake_hub, home, args)

    assert run.returncode == 0, run.lines[-3:]
    assert_quant_in_cache(home, repo)
    big = fake_hub.gets_of("Q/big.gguf")
    asked = [record.range[6:].split("-") for record in big if record.range]
    assert max(int(end or len(repo.files["Q/big.gguf"]) - 1) - int(start) + 1 for start, end in asked) > MIB
    assert len(fake_hub.connections_of("Q/big.gguf")) == 2
    assert all(fake_hub.served(REPO, name) == len(content) for name, content in repo.files.items())


def test_the_connection_budget_is_shared_by_all_files(fake_hub: FakeHub, home: Path) -> None:
    repo = fake_hub.add_repo(REPO, quant_files(QUANT, 2, 4 * MIB))
    fake_hub.rate_bytes_per_s = 8_000_000
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 3, "piece_bytes": MIB}

    run = run_driver(fake_hub, home, args)

    assert run.returncode == 0, run.lines[-3:]
    assert_quant_in_cache(home, repo)
    assert fake_hub.peak_transfers == 3
    assert all(fake_hub.served(REPO, str(p)) == len(repo.files[str(p)]) for p, _, _ in wanted(repo))


def test_capped_connections_grow_while_more_of_them_pay(fake_hub: FakeHub, home: Path) -> None:
    # 4 MB/s a connection: every doubling of the 4 the run starts with doubles the speed, so the
    # budget grows to its most (16) while pieces are left (see test_connection_budget for the rules).
    repo, path, size = one_big_file(fake_hub, 40)
    fake_hub.rate_bytes_per_s = 4_000_000
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 16, "piece_bytes": MIB}

    run = run_driver(fake_hub, home, args)

    assert run.returncode == 0, run.lines[-3:]
    assert snapshot_file(home, repo, path).read_bytes() == repo.files[path]
    assert fake_hub.peak_transfers == 16
    assert fake_hub.served(REPO, path) == size  # every byte once, over connections opened as the budget grew


def test_a_kill_mid_piece_loses_only_what_was_in_flight(
    fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]
) -> None:
    repo, path, size = one_big_file(fake_hub, 16)
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 4, "piece_bytes": 2 * MIB}
    fake_hub.rate_bytes_per_s = 1_500_000
    driver = LiveDriver(fake_hub, home, args)
    live_drivers.append(driver)
    driver.wait_for(progress_at_least(path, 4 * MIB))
    driver.kill()
    driver.process.wait(timeout=10)
    served_before = fake_hub.served(REPO, path)
    fake_hub.reset_counters()

    # What the sidecar counts is on disk, byte for byte, and some pieces stopped half way.
    recorded = json.loads(sidecar(home, repo, path).read_text())
    data = partial(home, repo, path).read_bytes()
    for index, done in enumerate(recorded["done"]):
        start = index * 2 * MIB
        assert data[start : start + done] == repo.files[path][start : start + done]
    assert any(0 < done < 2 * MIB for done in recorded["done"])
    fake_hub.rate_bytes_per_s = None

    again = run_driver(fake_hub, home, args)

    assert again.returncode == 0, again.lines[-3:]
    assert snapshot_file(home, repo, path).read_bytes() == repo.files[path]
    assert int(again.events("FileStarted")[0]["resume_from"]) == sum(recorded["done"])  # type: ignore[call-overload]
    resumed = {record.range for record in fake_hub.gets_of(path)}
    for index, done in enumerate(recorded["done"]):
        if 0 < done < 2 * MIB:  # a half-done piece is asked for from where its count stopped
            start = index * 2 * MIB + done
            assert f"bytes={start}-{(index + 1) * 2 * MIB - 1}" in resumed or f"bytes={start}-" in resumed
    assert fake_hub.served(REPO, path) == size - sum(recorded["done"])  # exactly what the sidecar lacked
    fetched_twice = served_before - sum(recorded["done"])
    # At the kill each of the 4 connections may hold a read and a socket's worth not yet on disk.
    assert fetched_twice < 4 * 512 * 1024, f"{fetched_twice} bytes crossed the wire twice"


def test_a_hub_that_ignores_range_gets_one_clean_transfer(
    fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]
) -> None:
    repo, path, _size = one_big_file(fake_hub, 8)
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 4, "piece_bytes": MIB}
    fake_hub.rate_bytes_per_s = 2_000_000
    first = LiveDriver(fake_hub, home, args)  # pieces, with ranges honoured, then a kill
    live_drivers.append(first)
    first.wait_for(progress_at_least(path, 2 * MIB))
    first.kill()
    first.process.wait(timeout=10)
    fake_hub.rate_bytes_per_s = None
    fake_hub.honor_range = False
    fake_hub.reset_counters()

    run = run_driver(fake_hub, home, args)

    assert run.returncode == 0, run.lines[-3:]
    assert snapshot_file(home, repo, path).read_bytes() == repo.files[path]
    assert not run.events("ChecksumRefetch")
    gets = fake_hub.gets_of(path)
    assert gets[-1].range is None and gets[-1].status == 200  # one plain transfer, from byte 0
    assert len(gets) <= 5  # the ranged asks that got a 200 were dropped at once, then one more


def killed_after_a_mib(fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]) -> tuple[FakeRepo, str]:
    """A 4 MiB file whose download was killed -9 once a MiB of it was on disk; the hub no longer throttled."""
    repo, path, _size = one_big_file(fake_hub, 4)
    fake_hub.rate_bytes_per_s = 1_000_000
    driver = LiveDriver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo)})
    live_drivers.append(driver)
    driver.wait_for(progress_at_least(path, MIB))
    driver.kill()
    driver.process.wait(timeout=10)
    fake_hub.rate_bytes_per_s = None
    return repo, path


def test_a_changed_file_at_a_new_commit_is_never_spliced_onto_the_old_bytes(
    fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]
) -> None:
    repo, path = killed_after_a_mib(fake_hub, home, live_drivers)
    old_partial = partial(home, repo, path)
    # The same path at a new commit, with other bytes: another sha256, so another partial file.
    changed = fake_hub.add_repo(REPO, {path: gguf_shard(1, 1, 4 * MIB)}, sha=fake_commit_sha("v2"))

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(changed)})

    assert run.returncode == 0, run.lines[-3:]
    assert run.events("FileStarted")[0]["resume_from"] == 0
    assert snapshot_file(home, changed, path).read_bytes() == changed.files[path]
    assert old_partial != partial(home, changed, path)  # named by sha256: the old bytes are never in reach


def test_the_same_bytes_at_a_new_commit_resume(fake_hub: FakeHub, home: Path, live_drivers: list[LiveDriver]) -> None:
    # The partial file is named by the file's sha256: at another commit with the same sha256 the bytes
    # are the same bytes, so they are kept (a README edit must not cost a 50 GB shard).
    repo, path = killed_after_a_mib(fake_hub, home, live_drivers)
    moved = fake_hub.add_repo(REPO, {**repo.files, "README.md": b"edited"}, sha=fake_commit_sha("v2"))

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(moved)})

    assert run.returncode == 0, run.lines[-3:]
    assert int(run.events("FileStarted")[0]["resume_from"]) >= MIB  # type: ignore[call-overload]
    assert snapshot_file(home, moved, path).read_bytes() == repo.files[path]


def test_a_file_corrupted_in_one_piece_is_deleted_with_its_sidecar(fake_hub: FakeHub, home: Path) -> None:
    repo, path, _size = one_big_file(fake_hub, 4)
    fake_hub.add_fault(REPO, path, Fault(corrupt=True, times=None))  # the piece holding the middle byte

    run = run_driver(fake_hub, home, {"repo_id": REPO, "files": wanted(repo), "connections": 4, "piece_bytes": MIB})

    assert run.returncode == errors.EXIT_INTEGRITY
    assert run.error["error"] == "ChecksumMismatch"
    assert not blob(home, repo, path).exists()
    assert not partial(home, repo, path).exists()
    assert not sidecar(home, repo, path).exists()


def test_a_stall_in_one_of_several_connections_is_retried_alone(fake_hub: FakeHub, home: Path) -> None:
    repo, path, size = one_big_file(fake_hub, 4)
    fake_hub.add_fault(REPO, path, Fault(stall_after=300_000, stall_s=600))  # the first GET to arrive
    args = {"repo_id": REPO, "files": wanted(repo), "connections": 4, "piece_bytes": MIB, "stall_timeout_s": 1}

    run = run_driver(fake_hub, home, {**args, "retry_wait_s": 0.1})

    assert run.returncode == 0, run.lines[-3:]
    (retry,) = run.events("FileRetrying")
    assert "no bytes for 1 s" in str(retry["reason"])
    assert snapshot_file(home, repo, path).read_bytes() == repo.files[path]
    # The stalled piece went on from what reached the disk: at most the read cut short is fetched again.
    assert fake_hub.served(REPO, path) - size < 64 * 1024


def test_connections_out_of_range_are_refused_in_one_line() -> None:
    for value in ("0", "65"):
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        result = run_nemolaunch("download", "acme/X-GGUF:Q4_K_M", "--connections", value, env=env)
        assert result.returncode == errors.EXIT_USAGE
        assert result.stderr.strip().count("\n") == 0 and "--connections" in result.stderr


# --- the pure parts and the verification record, in this process -----------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x.gguf",
        "a/../../x.gguf",
        "a/./x.gguf",
        "a//x.gguf",
        "/abs/x.gguf",
        "a\\..\\x.gguf",
        "C:x.gguf",
        "c:/x.gguf",
        "a/x.gguf\x00",
        "a\n/x.gguf",
        "a./x.gguf",
        ".cache/huggingface/x",
    ],
)
def test_unsafe_repo_paths_have_a_reason(name: str) -> None:
    from nemolaunch.core.download_plan import unsafe_path_reason

    assert unsafe_path_reason(name) is not None


@pytest.mark.parametrize("name", ["x.gguf", "UD-IQ3_XXS/Model-UD-IQ3_XXS-00001-of-00006.gguf", "a/b/c..d.gguf", ".x"])
def test_plain_repo_paths_are_accepted(name: str) -> None:
    from nemolaunch.core.download_plan import unsafe_path_reason

    assert unsafe_path_reason(name) is None


def test_split_sets_must_be_whole_per_folder_and_stem() -> None:
    from nemolaunch.core.download_plan import check_split_sets

    check_split_sets(["A/m-00001-of-00002.gguf", "A/m-00002-of-00002.gguf", "B/m-00001-of-00001.gguf"], where="x")
    with pytest.raises(errors.SplitSetIncomplete) as refused:
        check_split_sets(["A/m-00001-of-00003.gguf", "B/m-00002-of-00003.gguf"], where="the request")
    assert refused.value.missing == ["A/m-00002-of-00003.gguf", "A/m-00003-of-00003.gguf"]


def test_disk_arithmetic() -> None:
    from nemolaunch.core.download_plan import disk_shortfall, human_bytes

    assert disk_shortfall(needed_bytes=100, free_bytes=1000, margin_bytes=10) == 0
    assert disk_shortfall(needed_bytes=995, free_bytes=1000, margin_bytes=10) == 5
    assert disk_shortfall(needed_bytes=0, free_bytes=0, margin_bytes=10) == 0  # nothing to fetch: nothing to check
    assert human_bytes(190_312_000_000) == "190.3 GB"
    assert human_bytes(999) == "999 B"


def test_the_verified_record_survives_a_reload_and_notices_changes(tmp_path: Path) -> None:
    from nemolaunch.hub.verify import VerifiedState, sha256_of_file

    data = tmp_path / "blobs" / "file"
    data.parent.mkdir()
    data.write_bytes(os.urandom(3 * 1024 * 1024))
    seen: list[int] = []
    digest = sha256_of_file(data, on_progress=seen.append)
    state_path = tmp_path / "state.json"
    state = VerifiedState.load(state_path, tmp_path)
    state.record(data, digest)
    state.save()

    reloaded = VerifiedState.load(state_path, tmp_path)
    assert reloaded.matches(data, digest)
    assert not reloaded.matches(data, "0" * 64)
    assert list(reloaded.records) == ["blobs/file"]
    assert seen[-1] == data.stat().st_size
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".verified-")] == []  # no temp file left
    os.utime(data, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    assert not reloaded.matches(data, digest)
    state_path.write_text("{not json")
    assert VerifiedState.load(state_path, tmp_path).records == {}


def test_split_headers_are_read_with_the_gguf_package(tmp_path: Path) -> None:
    from nemolaunch.hub.verify import check_split_headers

    good = tmp_path / "good.gguf"
    good.write_bytes(gguf_shard(1, 2, 1000))
    check_split_headers([("Q/m-00001-of-00002.gguf", good)])
    with pytest.raises(errors.SplitCountMismatch):
        check_split_headers([("Q/m-00001-of-00003.gguf", good)])
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(errors.TruncatedGGUF):
        check_split_headers([("Q/m-00001-of-00002.gguf", junk)])

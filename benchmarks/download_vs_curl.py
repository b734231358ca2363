"""How fast is `nemolaunch download` next to curl, and how much does a killed download fetch twice?

Serves one split quant (real GGUF split parts of random bytes) from the fake Hugging Face Hub of the
tests (two loopback HTTP servers: the Hub, which redirects LFS files to a "CDN"), then:

1. curl baseline: fetches each shard's resolve URL with ``curl -sSfL`` into a file on disk, one after
   the other and two at once (nemolaunch fetches up to 4 shards at once, so with 2 shards the
   parallel-2 row is the like-for-like one);
2. ``nemolaunch download REPO:QUANT --json`` into an empty HF_HOME, wall time of the whole command
   (interpreter start, listing, transfer, sha256 of every shard, fsync), and once more into the
   now-full cache, which shows the fixed cost that no transfer hides;
3. kill test: throttles the hub so the download takes a few seconds, SIGKILLs nemolaunch when half
   of the quant is in ``blobs/*.incomplete``, runs it again to completion, and reports the bytes
   the hub served beyond the quant's size (fetched twice) and whether the files are byte-identical.

Each timing is the median of ``--repeats`` runs. The exit status is non-zero only when something is
wrong (a download failed, or bytes differ from the published ones), never because of a speed.

    .venv/bin/python benchmarks/download_vs_curl.py [--size-mb 200] [--shards 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# FakeHub lives with the tests, not in the package: put tests/ on the path to import it from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakehub import FakeHub, gguf_shard

REPO = "bench/Bench-Model-GGUF"
QUANT = "UD-Q2_K_XL"
MB = 1e6


class BenchmarkFailed(Exception):
    """A download failed or produced other bytes than the published ones."""


@dataclass(frozen=True)
class Timing:
    label: str
    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


# --- the published quant -----------------------------------------------------------------------------
def quant_files(total_bytes: int, count: int) -> dict[str, bytes]:
    stem = f"{QUANT}/Bench-Model-{QUANT}"
    payload = total_bytes // count
    return {f"{stem}-{i:05d}-of-{count:05d}.gguf": gguf_shard(i, count, payload) for i in range(1, count + 1)}


# --- running things ------------------------------------------------------------------------------------
@contextlib.contextmanager
def reaped(processes: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Kill (by pid, each one we started) whatever is still running when the block ends, even on error."""
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def nemolaunch_argv(hardware: Path) -> list[str]:
    return [sys.executable, "-m", "nemolaunch", "download", f"{REPO}:{QUANT}", "--hardware", str(hardware), "--json"]


def run_nemolaunch(hub: FakeHub, hf_home: Path, hardware: Path) -> tuple[float, dict[str, object]]:
    began = time.monotonic()
    done = subprocess.run(
        nemolaunch_argv(hardware), env=hub.env(hf_home), capture_output=True, text=True, timeout=600, check=False
    )
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        raise BenchmarkFailed(f"nemolaunch download exited {done.returncode}:\n{done.stderr.strip()}")
    return elapsed, json.loads(done.stdout)


def check_downloaded(result: dict[str, object], published: dict[str, bytes]) -> None:
    files = result["files"]
    assert isinstance(files, dict)
    if sorted(files) != sorted(published):
        raise BenchmarkFailed(f"nemolaunch returned {sorted(files)}, expected {sorted(published)}")
    for name, local in files.items():
        if Path(local).read_bytes() != published[name]:
            raise BenchmarkFailed(f"{name}: the downloaded bytes differ from the published ones")


def curl_once(urls: dict[str, str], published: dict[str, bytes], folder: Path, *, parallel: int) -> float:
    """Fetch every URL with curl, ``parallel`` at a time; seconds from the first start to the last end."""
    queue = list(urls.items())
    targets = {name: folder / f"curl-{index}.gguf" for index, name in enumerate(urls)}
    with reaped([]) as processes:
        began = time.monotonic()
        running: list[tuple[str, subprocess.Popen[bytes]]] = []
        while queue or running:
            while queue and len(running) < parallel:
                name, url = queue.pop(0)
                process = subprocess.Popen(["curl", "-sSfL", "-o", str(targets[name]), url], stderr=subprocess.PIPE)
                processes.append(process)
                running.append((name, process))
            # Wait for the oldest: with equal shards it is the first to finish, and a slot frees either way.
            name, process = running.pop(0)
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise BenchmarkFailed(f"curl {urls[name]} exited {process.returncode}: {stderr.decode().strip()}")
        elapsed = time.monotonic() - began
    for name, target in targets.items():
        if target.read_bytes() != published[name]:
            raise BenchmarkFailed(f"curl's copy of {name} differs from the published bytes")
        target.unlink()
    return elapsed


def partial_bytes(hf_home: Path) -> int:
    total = 0
    for path in glob.glob(str(hf_home / "hub" / "models--*" / "blobs" / "*.incomplete")):
        with contextlib.suppress(FileNotFoundError):  # renamed into place between listing and stat
            total += os.stat(path).st_size
    return total


# --- the three measurements ------------------------------------------------------------------------------
def measure_speed(
    hub: FakeHub, published: dict[str, bytes], hardware: Path, work: Path, repeats: int
) -> tuple[list[Timing], Timing]:
    urls = {name: f"{hub.url}/{REPO}/resolve/main/{name}" for name in published}
    sequential = Timing("curl, one shard at a time", [])
    parallel = Timing("curl, 2 shards at once", [])
    nemolaunch = Timing("nemolaunch download", [])
    cached = Timing("nemolaunch, all cached", [])
    # Interleaved rather than one tool's runs in a row, so slow drift of this shared machine hits all alike.
    for run in range(repeats):
        sequential.runs.append(curl_once(urls, published, work, parallel=1))
        parallel.runs.append(curl_once(urls, published, work, parallel=2))
        hf_home = work / f"hf-{run}"
        elapsed, result = run_nemolaunch(hub, hf_home, hardware)
        check_downloaded(result, published)
        if result["fetched_bytes"] != sum(map(len, published.values())):
            raise BenchmarkFailed(f"an empty cache, yet nemolaunch fetched {result['fetched_bytes']} bytes")
        nemolaunch.runs.append(elapsed)
        elapsed, result = run_nemolaunch(hub, hf_home, hardware)
        if result["fetched_bytes"] != 0:
            raise BenchmarkFailed(f"a full cache, yet nemolaunch fetched {result['fetched_bytes']} bytes")
        cached.runs.append(elapsed)
        shutil.rmtree(hf_home)  # 2 x the quant per run would otherwise pile up on disk
    return [sequential, parallel, nemolaunch], cached


@dataclass(frozen=True)
class KillResult:
    at_kill: int  # bytes in partial files when the first run was killed
    resumed_fetched: int  # what the second run says it fetched
    served: int  # bytes the hub sent over both runs
    leftovers: int  # partial files still there after the second run


def measure_kill(hub: FakeHub, published: dict[str, bytes], hardware: Path, work: Path, seconds: float) -> KillResult:
    total = sum(map(len, published.values()))
    hf_home = work / "hf-kill"
    hub.reset_counters()
    # The throttle is per connection and nemolaunch fetches every shard at once (2 <= its 4 workers),
    # so this rate makes the whole download take about ``seconds``.
    hub.rate_bytes_per_s = max(len(data) for data in published.values()) / seconds
    try:
        with reaped([]) as processes, (work / "kill-stderr.txt").open("w+b") as stderr:
            process = subprocess.Popen(
                nemolaunch_argv(hardware), env=hub.env(hf_home), stdout=subprocess.DEVNULL, stderr=stderr
            )
            processes.append(process)
            deadline = time.monotonic() + max(60.0, 10 * seconds)
            while partial_bytes(hf_home) < total / 2:
                if process.poll() is not None:
                    stderr.seek(0)
                    raise BenchmarkFailed(
                        f"nemolaunch exited {process.returncode} before half the quant was fetched "
                        f"(throttle too loose?):\n{stderr.read().decode().strip()}"
                    )
                if time.monotonic() > deadline:
                    raise BenchmarkFailed(f"less than half the quant in partial files after {deadline:.0f} s")
                time.sleep(0.02)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        hub.rate_bytes_per_s = None  # the second run need not crawl: what it refetches does not depend on speed
    at_kill = partial_bytes(hf_home)
    _, result = run_nemolaunch(hub, hf_home, hardware)
    check_downloaded(result, published)
    fetched = result["fetched_bytes"]
    assert isinstance(fetched, int)
    served = sum(hub.served(REPO, name) for name in published)
    leftovers = len(glob.glob(str(hf_home / "hub" / "models--*" / "blobs" / "*.incomplete")))
    shutil.rmtree(hf_home)
    return KillResult(at_kill=at_kill, resumed_fetched=fetched, served=served, leftovers=leftovers)


# --- report --------------------------------------------------------------------------------------------------
def write_hardware(path: Path) -> None:
    """Recorded facts of a big CPU machine, so that the planner lets any quant through."""
    facts = {
        "os": "linux",
        "arch": "x86_64",
        "cpu": {"model": "Benchmark CPU", "physical_cores": 8, "logical_cores": 16, "flags": ["avx2"]},
        "memory": {"total_bytes": 1024 * 2**30, "available_bytes": 1000 * 2**30},
        "disk": {"path": str(path.parent), "free_bytes": 10 * 2**40},
        "gpus": [],
    }
    path.write_text(json.dumps(facts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0, help="size of the quant, all shards together")
    parser.add_argument("--shards", type=int, default=2, help="number of split parts")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timing; the median is reported")
    parser.add_argument("--kill-seconds", type=float, default=4.0, help="how long the throttled download takes")
    parser.add_argument("--workdir", type=Path, default=None, help="where downloads go [default: a temp folder]")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is not on PATH", file=sys.stderr)
        return 2

    published = quant_files(int(args.size_mb * MB), args.shards)
    total = sum(map(len, published.values()))
    with tempfile.TemporaryDirectory(prefix="nl-bench-", dir=args.workdir) as folder, FakeHub() as hub:
        work = Path(folder)
        hub.add_repo(REPO, published)
        hardware = work / "machine.json"
        write_hardware(hardware)
        try:
            timings, cached = measure_speed(hub, published, hardware, work, args.repeats)
            kill = measure_kill(hub, published, hardware, work, args.kill_seconds)
        except (BenchmarkFailed, subprocess.TimeoutExpired) as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1

    print(f"{REPO}:{QUANT}: {args.shards} shards, {total / MB:.1f} MB; median of {args.repeats} runs")
    print(f"{'':<28} {'median s':>9} {'MB/s':>8}   runs (s)")
    for timing in [*timings, cached]:
        rate = f"{total / MB / timing.median:>8.1f}" if timing is not cached else f"{'':>8}"
        runs = " ".join(f"{run:.2f}" for run in timing.runs)
        print(f"{timing.label:<28} {timing.median:>9.2f} {rate}   {runs}")
    sequential, parallel, nemolaunch = timings
    print(f"ratio nemolaunch / curl (throughput): {parallel.median / nemolaunch.median:.2f} against 2 at once, "
          f"{sequential.median / nemolaunch.median:.2f} against one at a time")  # fmt: skip
    print()
    twice = kill.served - total
    print(f"kill test (throttled to {args.kill_seconds:g} s, SIGKILL at half):")
    print(f"  in partial files at the kill   {kill.at_kill / MB:>9.1f} MB ({kill.at_kill / total:.0%})")
    print(f"  fetched by the resumed run     {kill.resumed_fetched / MB:>9.1f} MB")
    print(f"  served by the hub, both runs   {kill.served / MB:>9.1f} MB")
    print(f"  fetched twice                  {twice / MB:>9.3f} MB ({twice} bytes)")
    print("  final files                    byte-identical to the published ones")
    if kill.leftovers:
        print(f"  note: {kill.leftovers} partial file(s) left in the cache after the resumed run")
    return 0


if __name__ == "__main__":
    sys.exit(main())

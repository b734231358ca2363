"""How fast is `nemolaunch download` next to curl and `hf download`, and what does a kill cost?

Serves one split quant (real GGUF split parts of random bytes) from the fake Hugging Face Hub of the
tests (two loopback HTTP servers: the Hub, which redirects LFS files to a "CDN"), twice: as is, and
with every connection capped (``--cap-mb-s``, as a CDN edge caps each connection). On each:

1. curl, one shard at a time and all shards at once (``curl -sSfL`` of each resolve URL into a file);
2. ``hf download REPO --include QUANT/*`` (huggingface_hub's own CLI, Xet off) into an empty HF_HOME;
3. ``nemolaunch download REPO:QUANT --json`` into an empty HF_HOME: the whole command (interpreter
   start, planning, listing, transfer, sha256 of every shard, fsync); on the plain hub once more into
   the now full cache, which is the fixed cost no transfer hides.

Each row is the median of ``--repeats`` runs, the tools interleaved within a repeat so drift of a
shared machine hits all alike; the spread (min-max) is printed, and every ratio is against a baseline
measured in the same run. Then the kill test: on the plain hub, throttled so that the download takes
seconds, nemolaunch is SIGKILLed once half of the quant was served, run again unthrottled, and the
bytes the hub served beyond the quant's size (fetched twice) are counted; the files must be
byte-identical to the published ones.

The table and the machine's facts are printed and written to ``--results-dir`` (Markdown and JSON).
The exit status is non-zero only when something is wrong (a download failed, bytes differ), never
because of a speed.

    .venv/bin/python benchmarks/download_vs_curl.py [--size-mb 1000] [--shards 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# FakeHub lives with the tests, not in the package: put tests/ on the path to import it from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_servers import write_hardware
from fakehub import FakeHub, gguf_shard, sha256_hex

REPO = "bench/Bench-Model-GGUF"
QUANT = "UD-Q2_K_XL"
MB = 1e6
RESULTS = Path(__file__).resolve().parent / "results"
# Set by --nemolaunch-src: another checkout's src/ that the nemolaunch commands run from (a "before").
NEMOLAUNCH_SRC: Path | None = None
PUBLISHED: dict[str, bytes] = {}


class BenchmarkFailed(Exception):
    """A download failed or produced other bytes than the published ones."""


@dataclass
class Row:
    label: str
    runs: list[float] = field(default_factory=list)  # seconds

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


@dataclass
class KillRun:
    at_kill: int  # bytes of the quant on disk when nemolaunch was killed
    served: int  # bytes the hub served over both runs
    total: int

    @property
    def twice(self) -> int:
        return self.served - self.total


# --- the published quant and the tools ------------------------------------------------------------------
def quant_files(total_bytes: int, count: int) -> dict[str, bytes]:
    stem = f"{QUANT}/Bench-Model-{QUANT}"
    payload = total_bytes // count
    return {f"{stem}-{i:05d}-of-{count:05d}.gguf": gguf_shard(i, count, payload) for i in range(1, count + 1)}


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


def nemolaunch_argv(hardware: Path, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "nemolaunch", "download", f"{REPO}:{QUANT}", "--hardware", str(hardware)]
    return [*command, "--json", *extra]


def nemolaunch_env(hub: FakeHub, hf_home: Path) -> dict[str, str]:
    if NEMOLAUNCH_SRC is None:
        return hub.env(hf_home)
    return hub.env(hf_home, PYTHONPATH=os.pathsep.join([str(NEMOLAUNCH_SRC), os.environ.get("PYTHONPATH", "")]))


def run_nemolaunch(hub: FakeHub, hf_home: Path, hardware: Path, extra: list[str]) -> tuple[float, dict[str, object]]:
    env = nemolaunch_env(hub, hf_home)
    began = time.monotonic()
    done = subprocess.run(nemolaunch_argv(hardware, extra), env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        raise BenchmarkFailed(f"nemolaunch download exited {done.returncode}:\n{done.stderr.strip()}")
    return elapsed, json.loads(done.stdout)


def run_hf(hub: FakeHub, hf_home: Path, published: dict[str, bytes]) -> float:
    hf = Path(sys.executable).with_name("hf")
    began = time.monotonic()
    done = subprocess.run(
        [str(hf), "download", REPO, "--include", f"{QUANT}/*"],
        env=hub.env(hf_home),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        raise BenchmarkFailed(f"hf download exited {done.returncode}:\n{done.stderr.strip()[-2000:]}")
    snapshot = next((hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir())
    check_files({name: snapshot / name for name in published}, published, "hf download")
    return elapsed


def check_files(files: dict[str, Path], published: dict[str, bytes], who: str) -> None:
    if sorted(files) != sorted(published):
        raise BenchmarkFailed(f"{who} returned {sorted(files)}, expected {sorted(published)}")
    for name, local in files.items():
        if Path(local).read_bytes() != published[name]:
            raise BenchmarkFailed(f"{who}: the bytes of {name} differ from the published ones")


def run_curl(hub: FakeHub, published: dict[str, bytes], folder: Path, *, parallel: int) -> float:
    """Fetch every shard with curl, ``parallel`` at a time; seconds from the first start to the last end."""
    urls = {name: f"{hub.url}/{REPO}/resolve/main/{name}" for name in published}
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
    check_files(targets, published, "curl")
    for target in targets.values():
        target.unlink()
    return elapsed


# --- the measurements -------------------------------------------------------------------------------------
def measure(
    hub: FakeHub, published: dict[str, bytes], hardware: Path, work: Path, args: argparse.Namespace, *, cached: bool
) -> list[Row]:
    rows = [Row("curl, one shard at a time"), Row(f"curl, {len(published)} shards at once"), Row("hf download")]
    rows.append(Row("nemolaunch download"))
    if cached:
        rows.append(Row("nemolaunch, all cached"))
    total = sum(map(len, published.values()))
    for run in range(args.repeats):
        rows[0].runs.append(run_curl(hub, published, work, parallel=1))
        rows[1].runs.append(run_curl(hub, published, work, parallel=len(published)))
        hf_home = work / f"hf-{run}"
        rows[2].runs.append(run_hf(hub, hf_home, published))
        shutil.rmtree(hf_home)
        elapsed, result = run_nemolaunch(hub, hf_home, hardware, args.nemolaunch_arg)
        check_files({k: Path(v) for k, v in result["files"].items()}, published, "nemolaunch")  # type: ignore[union-attr]
        if result["fetched_bytes"] != total:
            raise BenchmarkFailed(f"an empty cache, yet nemolaunch fetched {result['fetched_bytes']} bytes")
        rows[3].runs.append(elapsed)
        if cached:
            elapsed, result = run_nemolaunch(hub, hf_home, hardware, args.nemolaunch_arg)
            if result["fetched_bytes"] != 0:
                raise BenchmarkFailed(f"a full cache, yet nemolaunch fetched {result['fetched_bytes']} bytes")
            rows[4].runs.append(elapsed)
        shutil.rmtree(hf_home)
    return rows


def measure_kill(hub: FakeHub, published: dict[str, bytes], hardware: Path, work: Path, seconds: float) -> KillRun:
    total = sum(map(len, published.values()))
    hf_home = work / "hf-kill"
    # The plan reads the first shard's header from the Hub and keeps it: read it first, so that only
    # the download's own bytes are counted below.
    plan = [sys.executable, "-m", "nemolaunch", "plan", f"{REPO}:{QUANT}", "--hardware", str(hardware), "--json"]
    subprocess.run(plan, env=nemolaunch_env(hub, hf_home), capture_output=True, timeout=300, check=True)
    hub.reset_counters()
    # Slow enough per connection that even 32 connections at once take about ``seconds``.
    hub.rate_bytes_per_s = total / seconds / 32
    try:
        with reaped([]) as processes:
            process = subprocess.Popen(
                nemolaunch_argv(hardware, []),
                env=nemolaunch_env(hub, hf_home),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            processes.append(process)
            deadline = time.monotonic() + max(120.0, 30 * seconds)
            while (on_disk := partial_bytes(hf_home, published)) < total / 2:
                if process.poll() is not None:
                    assert process.stderr is not None
                    raise BenchmarkFailed(f"nemolaunch exited {process.returncode} before half the quant was on disk:\n"
                                          f"{process.stderr.read().decode().strip()}")  # fmt: skip
                if time.monotonic() > deadline:
                    raise BenchmarkFailed("less than half the quant on disk before the deadline")
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        hub.rate_bytes_per_s = None  # what the second run fetches again does not depend on its speed
    _, result = run_nemolaunch(hub, hf_home, hardware, [])
    check_files({k: Path(v) for k, v in result["files"].items()}, published, "nemolaunch after a kill")  # type: ignore[union-attr]
    run = KillRun(at_kill=on_disk, served=sum(hub.served(REPO, name) for name in published), total=total)
    shutil.rmtree(hf_home)
    return run


def partial_bytes(hf_home: Path, published: dict[str, bytes]) -> int:
    """Bytes of the quant in partial files, as nemolaunch counts them (its sidecars, else the files' sizes)."""
    from nemolaunch.hub.partial_state import bytes_on_disk

    blobs = hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    total = 0
    for content in published.values():
        sha256 = sha256_hex(content)  # computed once per content, then cached
        if (blobs / sha256).exists():
            total += len(content)
        else:
            total += bytes_on_disk(blobs / f"{sha256}.incomplete", sha256, len(content))
    return total


# --- report -------------------------------------------------------------------------------------------------
def machine_facts(work: Path) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False)
    import nemolaunch

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "memory_bytes": memory,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "curl": subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
        "nemolaunch": f"{commit.stdout.strip() or '?'}{' (modified)' if dirty.stdout.strip() else ''}"
        if NEMOLAUNCH_SRC is None
        else f"the checkout of {NEMOLAUNCH_SRC.parent} (--nemolaunch-src)",
        "nemolaunch_from": str(NEMOLAUNCH_SRC or Path(nemolaunch.__file__).parents[1]),
        "workdir": str(work),
    }


def table(title: str, rows: list[Row], total: int) -> list[str]:
    by_label = {row.label: row for row in rows}
    curl_one = rows[0].median
    hf = by_label["hf download"].median
    lines = [f"### {title}", "", "| | median s | MB/s | spread s (min-max) | × curl one at a time | × hf download |"]
    lines.append("|---|---:|---:|---|---:|---:|")
    for row in rows:
        cached = "cached" in row.label
        rate = "" if cached else f"{total / MB / row.median:.0f}"
        ratios = ("", "") if cached else (f"{curl_one / row.median:.2f}", f"{hf / row.median:.2f}")
        spread = f"{min(row.runs):.2f}-{max(row.runs):.2f}"
        lines.append(f"| {row.label} | {row.median:.2f} | {rate} | {spread} | {ratios[0]} | {ratios[1]} |")
    return [*lines, ""]


def report(
    args: argparse.Namespace, facts: dict[str, object], plain: list[Row], capped: list[Row], kills: list[KillRun]
) -> str:
    total = sum(map(len, PUBLISHED.values()))
    lines = ["# nemolaunch download against curl and hf download", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += [f"- quant: {args.shards} shards, {total / MB:.1f} MB in all; medians of {args.repeats} runs", ""]
    if args.nemolaunch_arg:
        lines += [f"- nemolaunch given: {' '.join(args.nemolaunch_arg)}", ""]
    lines += table("plain loopback hub", plain, total)
    if capped:
        lines += table(f"hub capping each connection at {args.cap_mb_s:g} MB/s", capped, total)
    if kills:
        lines += ["### kill -9 at half, then resume", "", "| run | on disk at the kill MB | fetched twice MB | % |"]
        lines.append("|---|---:|---:|---:|")
        for index, kill in enumerate(kills, 1):
            twice = kill.twice
            lines.append(f"| {index} | {kill.at_kill / MB:.1f} | {twice / MB:.2f} | {100 * twice / kill.total:.2f} |")
        median = statistics.median(kill.twice for kill in kills)
        lines += [f"| median | | {median / MB:.2f} | {100 * median / total:.2f} |", ""]
    lines += ["Files byte-identical to the published ones after every run.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1000.0, help="size of the quant, all shards together")
    parser.add_argument("--shards", type=int, default=4, help="number of split parts")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each timing; the median is reported")
    parser.add_argument("--cap-mb-s", type=float, default=40.0, help="per-connection cap of the capped hub")
    parser.add_argument("--kill-seconds", type=float, default=4.0, help="how long the throttled download takes")
    parser.add_argument("--kill-repeats", type=int, default=3, help="kill tests to run")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the table is written")
    parser.add_argument("--label", default="", help="added to the result files' names")
    parser.add_argument("--workdir", type=Path, default=None, help="where downloads go [default: a temp folder]")
    parser.add_argument("--nemolaunch-arg", action="append", default=[], help="passed on to nemolaunch download")
    parser.add_argument("--skip", action="append", default=[], choices=["capped", "kill"], help="leave a part out")
    parser.add_argument("--nemolaunch-src", type=Path, default=None, help="run nemolaunch from this src/ folder")
    args = parser.parse_args()
    global NEMOLAUNCH_SRC
    NEMOLAUNCH_SRC = args.nemolaunch_src.absolute() if args.nemolaunch_src else None
    if shutil.which("curl") is None or not Path(sys.executable).with_name("hf").exists():
        print("needs curl on PATH and huggingface_hub's `hf` next to this Python", file=sys.stderr)
        return 2

    published = quant_files(int(args.size_mb * MB), args.shards)
    PUBLISHED.update(published)
    with (
        tempfile.TemporaryDirectory(prefix="nl-bench-", dir=args.workdir) as folder,
        FakeHub() as plain_hub,
        FakeHub(rate_bytes_per_s=args.cap_mb_s * MB) as capped_hub,
    ):
        work = Path(folder)
        plain_hub.add_repo(REPO, published)
        capped_hub.add_repo(REPO, published)
        hardware = work / "machine.json"
        write_hardware(hardware)
        facts = machine_facts(work)
        try:
            plain = measure(plain_hub, published, hardware, work, args, cached=True)
            capped = [] if "capped" in args.skip else measure(capped_hub, published, hardware, work, args, cached=False)
            kills = [
                measure_kill(plain_hub, published, hardware, work, args.kill_seconds)
                for _ in range(0 if "kill" in args.skip else args.kill_repeats)
            ]
        except (BenchmarkFailed, subprocess.TimeoutExpired) as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1

    text = report(args, facts, plain, capped, kills)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = (
        "download_vs_curl-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + (f"-{args.label}" if args.label else "")
    )
    (args.results_dir / f"{stem}.md").write_text(text)
    raw = {
        "facts": facts,
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "plain": {row.label: row.runs for row in plain},
        "capped": {row.label: row.runs for row in capped},
        "kills": [vars(kill) for kill in kills],
    }
    (args.results_dir / f"{stem}.json").write_text(json.dumps(raw, indent=1))
    print(f"written to {args.results_dir / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every benchmark, one after another, with one table of results and this machine's facts.

Each benchmark measures against a baseline in the same run (curl, `hf`, bare llama-server, the
measured peak, a default configuration) and also runs alone; this only runs them in turn and writes
their tables, with `nemolaunch doctor --json`, to benchmarks/results/all-<time>.md.

    .venv/bin/python benchmarks/run_all.py [--quick] [--skip NAME,...]

``--quick`` gives each its smallest input (what the smoke tests run): a check that they all work, not a
measurement.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name: (script, full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "P1 start-up": ("startup.py", ["--runs", "7"], ["--runs", "1"]),
    "P2 serve to /health": ("serve_to_health.py", ["--runs", "5", "--sizes", "tiny,2"],
                            ["--runs", "1", "--sizes", "tiny"]),
    "P3 downloads": ("download_vs_curl.py", [], ["--size-mb", "4", "--shards", "2", "--repeats", "1",
                                                 "--kill-repeats", "1", "--cap-mb-s", "8", "--kill-seconds", "2"]),
    "P4 serving sweep": ("serving_sweep.py", ["--size", "2", "--runs", "3"], ["--size", "0.03", "--runs", "1"]),
    "P5 memory forecast": ("forecast_vs_rss.py", ["--models", "tiny,scaled-0.5,scaled-2,scaled-4"], []),
    "speed forecast": ("speed_vs_forecast.py", ["--sizes", "0.03,0.4,2,4", "--runs", "5"],
                       ["--sizes", "0.02", "--runs", "1", "--tokens", "4"]),
    "prompt reuse": ("prompt_reuse.py", ["--runs", "5"], ["--runs", "1", "--turns", "3"]),
    "RPC cluster": ("rpc_cluster.py", ["--runs", "5"], ["--runs", "1", "--tokens", "4"]),
    "RPC over shaped links": ("rpc_link.py", ["--gbit", "1,10"], ["--size-gb", "0.4", "--tokens", "4"]),
    "disk-backed": ("disk_backed.py", ["--runs", "2", "--limits", "0,0.25,0.5,0.75"],
                    ["--size-gb", "0.3", "--runs", "1", "--tokens", "4", "--limits", "0,0.5"]),
    "P6 build": ("build_times.py", ["--runs", "5", "--cold"], ["--runs", "1"]),
    "header read": ("header_read.py", ["--runs", "3"], ["--runs", "1", "--vocab", "2000", "--merges", "4000"]),
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", default="", help="benchmark names to leave out, comma-separated (e.g. P3)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    skipped = {word.strip() for word in args.skip.split(",") if word.strip()}
    doctor = subprocess.run(
        [sys.executable, "-m", "nemolaunch", "doctor", "--json"], capture_output=True, text=True, check=False
    )
    sections = [f"# Benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "", "```json",
                doctor.stdout.strip(), "```", ""]  # fmt: skip
    failed = []
    for name, (script, full, quick) in BENCHMARKS.items():
        if any(name.startswith(word) for word in skipped):
            continue
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(HERE / script), *(quick if args.quick else full)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        took = time.monotonic() - started
        print(f"{name}: exit {done.returncode} in {took:.0f} s", file=sys.stderr)
        sections += [f"## {name} (`{script}`, {took:.0f} s)", "", done.stdout.strip(), ""]
        if done.returncode != 0:
            failed.append(name)
            sections += ["```", done.stderr.strip()[-2000:], "```", ""]
    text = "\n".join(sections)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"all-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}{'-quick' if args.quick else ''}.md"
    target.write_text(text + "\n")
    print(text)
    print(f"written to {target}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""What a model's vocabulary costs the first `nemolaunch plan` of it: the GGUF header read and parsed.

Writes two GGUF files that differ only in their tokenizer: a few hundred tokens (the baseline, as in the
tiny and scaled models), and one the size of the Nemotron 3 family's (131,072 tokens, their types, and
260,000 BPE merges: an 8 MB header). Each is planned with `nemolaunch plan FILE --json` (a whole
command, as a person runs it) once with the header cache cold (the file is touched, so its entry no
longer matches) and once warm; medians of ``--runs``, the spread, and ratios against the baseline
measured in the same run. The table is printed with this machine's facts (and written to ``--out``;
``run_all.py`` keeps it with the others).

    .venv/bin/python benchmarks/header_read.py [--runs 3] [--vocab 131072] [--merges 260000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_servers import write_hardware

# The header files are the tests' own (tests/gguf_headers.py): put tests/ on the path to import them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gguf_headers import write_nemotron_gguf


def plan_seconds(model: Path, machine: Path, env: dict[str, str], *, cold: bool) -> float:
    if cold:
        os.utime(model)  # a new modification time: the cached header no longer matches the file
    argv = [sys.executable, "-m", "nemolaunch", "plan", str(model), "--hardware", str(machine), "--json"]
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"nemolaunch plan {model.name} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=131_072, help="tokens of the large vocabulary")
    parser.add_argument("--merges", type=int, default=260_000, help="BPE merges of the large vocabulary")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nl-header-") as folder:
        work = Path(folder)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}  # a header cache of this run's own
        machine = work / "machine.json"
        write_hardware(machine)
        models = {
            "300 tokens (baseline)": write_nemotron_gguf(work / "small.gguf", vocab=300),
            f"{args.vocab:,} tokens, {args.merges:,} merges": write_nemotron_gguf(
                work / "large.gguf", vocab=args.vocab, merges=args.merges
            ),
        }
        runs: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):  # interleaved, so drift of a shared machine hits every row alike
            for label, model in models.items():
                for state in ("cold", "warm"):
                    runs.setdefault((label, state), []).append(plan_seconds(model, machine, env, cold=state == "cold"))
        sizes = {label: model.stat().st_size for label, model in models.items()}

    baseline = statistics.median(runs[("300 tokens (baseline)", "cold")])
    lines = [
        "# The first `nemolaunch plan` of a model: its GGUF header read with the cache cold and warm",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}",
        f"- medians of {args.runs} runs; ratios against the baseline's cold plan, measured in the same run",
        "",
        "| vocabulary | file MB | cache | median s | spread s (min-max) | × baseline cold |",
        "|---|---:|---|---:|---|---:|",
    ]  # fmt: skip
    for (label, state), seconds in runs.items():
        median = statistics.median(seconds)
        lines.append(
            f"| {label} | {sizes[label] / 1e6:.1f} | {state} | {median:.2f} | {min(seconds):.2f}-{max(seconds):.2f} "
            f"| {median / baseline:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""P1: how long the CLI takes to start, against `hf --help` and `python -c pass` in the same run.

.venv/bin/python benchmarks/startup.py [--runs 7] [--llama-cpp DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> int:
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.tiny_model import write_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--llama-cpp", type=Path, default=None)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    llama_cpp = find_binary("llama-server", explicit_dir=args.llama_cpp).path.parent
    with tempfile.TemporaryDirectory() as folder:
        model = write_tiny_model(Path(folder) / "tiny.gguf")
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "hf --help": [str(bin_dir / "hf"), "--help"],
            "nemolaunch --help": [str(bin_dir / "nemolaunch"), "--help"],
            "nemolaunch serve --dry-run": [
                str(bin_dir / "nemolaunch"), "serve", str(model), "--dry-run", "--llama-cpp", str(llama_cpp),
            ],
        }  # fmt: skip
        for argv in cases.values():
            timed(argv, 1)  # warm the page cache: every case starts from the same disk state
        results = {name: timed(argv, args.runs) for name, argv in cases.items()}
    baseline = statistics.median(results["hf --help"])
    print(f"| command | median s | spread s | ÷ hf --help |  ({args.runs} runs each)")
    print("|---|---:|---:|---:|")
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(f"| {name} | {median:.3f} | {max(seconds) - min(seconds):.3f} | {median / baseline:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""P4: the server nemolaunch launches, against llama-server's own defaults and a small sweep.

On a scaled Ultra-shaped model (default 2 GB), each configuration serves the same requests: a ~500-token
prompt (prompt tokens/s) and 64 generated tokens (generation tokens/s), both from llama-server's own
`timings`, medians of --runs. If the best of the sweep beats nemolaunch's launch by more than 5 %, the
launch should choose those values from the hardware facts.

    .venv/bin/python benchmarks/serving_sweep.py [--size 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_servers import chat, free_port, nemolaunch, serving, stop, wait_until

PROMPT = "Describe the tides, the waves and the currents of the open sea in great detail. " * 30


def measure(argv: list[str], port: int, runs: int) -> tuple[float, float]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: serving(port, process), timeout_s=300)
        prompt, generation = [], []
        for run in range(runs + 1):
            body = {
                "messages": [{"role": "user", "content": f"{run} {PROMPT}"}],
                "max_tokens": 64, "ignore_eos": True, "cache_prompt": False,
            }  # fmt: skip
            timings = chat(port, body)["timings"]
            if run:  # the first warms the page cache
                prompt.append(timings["prompt_per_second"])
                generation.append(timings["predicted_per_second"])
        return statistics.median(prompt), statistics.median(generation)
    finally:
        stop(process)


def main() -> int:
    import psutil

    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.scaled_model import shape_for_size, write_scaled_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=2.0, help="the scaled model's size in GB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--llama-cpp", type=Path, default=None)
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "nemolaunch" / "scaled")
    args = parser.parse_args()
    server = find_binary("llama-server", explicit_dir=args.llama_cpp).path
    shape = shape_for_size(int(args.size * 1e9))
    model = args.models / f"scaled-{shape.n_embd}x{len(shape.layers)}.gguf"
    if not model.exists():
        args.models.mkdir(parents=True, exist_ok=True)
        write_scaled_model(model, shape)
    physical = psutil.cpu_count(logical=False) or 1
    logical = psutil.cpu_count() or physical
    configs: dict[str, list[str]] = {}
    port = free_port()
    configs["nemolaunch serve (its defaults)"] = nemolaunch(
        "serve", str(model), "--port", str(port), "--llama-cpp", str(server.parent), "--ctx-size", "4096"
    )
    for threads in sorted({1, physical, logical}):
        for ubatch in (256, 512):
            configs[f"llama-server -t {threads} -ub {ubatch}"] = [
                str(server), "-m", str(model), "-c", "4096", "-t", str(threads), "-ub", str(ubatch),
            ]  # fmt: skip
    configs["llama-server (its defaults)"] = [str(server), "-m", str(model), "-c", "4096"]
    results = {}
    for name, argv in configs.items():
        port = free_port()
        argv = (
            [*argv[: argv.index("--port") + 1], str(port), *argv[argv.index("--port") + 2 :]]
            if "--port" in argv
            else [*argv, "--port", str(port)]
        )
        results[name] = measure(argv, port, args.runs)
    base_prompt, base_generation = results["nemolaunch serve (its defaults)"]
    print(f"machine: {physical} physical / {logical} logical cores, {os.uname().machine}; {model.name}, "
          f"{model.stat().st_size / 1e9:.2f} GB; medians of {args.runs}")  # fmt: skip
    print("| configuration | prompt tok/s | × nemolaunch | generation tok/s | × nemolaunch |")
    print("|---|---:|---:|---:|---:|")
    for name, (prompt, generation) in results.items():
        print(f"| {name} | {prompt:.1f} | {prompt / base_prompt:.2f} | {generation:.1f} | "
              f"{generation / base_generation:.2f} |")  # fmt: skip
    best = max(results.items(), key=lambda item: item[1][1])
    gain = best[1][1] / base_generation - 1
    print(f"\nbest generation: {best[0]} ({gain:+.1%} against nemolaunch's launch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

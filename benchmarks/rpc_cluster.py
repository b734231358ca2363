"""What spreading a model over llama.cpp RPC workers costs: load time and tokens/s with 0, 1 and 2 workers.

Each run starts the workers with `nemolaunch rpc-worker` on loopback ports, then `nemolaunch serve
--rpc ...` on the embedded tiny Nemotron-architecture model, and measures the time from launch to
/health (load) and llama-server's own `timings` of one completion (prompt and generation tokens/s).
Every figure is a median over --runs runs, with the spread, and a ratio against 0 workers measured in
the same run. Loopback has no network latency: on a LAN each token also pays a round trip per worker.

    .venv/bin/python benchmarks/rpc_cluster.py [--llama-cpp DIR] [--runs 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_servers import chat, free_port, listening, nemolaunch, publish, serving, stop, wait_until


def one_run(model: Path, llama_cpp: Path, workers: int, tokens: int) -> dict[str, float]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        endpoints = []
        for _ in range(workers):
            port = free_port()
            started.append(
                subprocess.Popen(
                    nemolaunch("rpc-worker", "--port", str(port), "--llama-cpp", str(llama_cpp), "--threads", "1"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_until(lambda port=port: listening(port))
            endpoints.append(f"127.0.0.1:{port}")
        port = free_port()
        rpc = ["--rpc", ",".join(endpoints)] if endpoints else []
        launched = time.monotonic()
        server = subprocess.Popen(
            nemolaunch("serve", str(model), "--port", str(port), "--llama-cpp", str(llama_cpp), *rpc,
                       "--", "--threads", "1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(server)
        wait_until(lambda: serving(port, server))
        load_s = time.monotonic() - launched
        timings = chat(
            port,
            {
                "messages": [{"role": "user", "content": "Tell me about the sea. " * 8}],
                "max_tokens": tokens,
                "ignore_eos": True,  # a fixed count of generated tokens, whatever the random model says
            },
        )["timings"]
        return {
            "load_s": load_s,
            "prompt_tps": timings["prompt_per_second"],
            "gen_tps": timings["predicted_per_second"],
        }
    finally:
        for process in reversed(started):  # the head first, then its workers
            stop(process)


def main() -> int:
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.tiny_model import write_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = parser.parse_args()
    llama_cpp = find_binary("llama-server", explicit_dir=args.llama_cpp).path.parent
    lines = [
        f"machine: {platform.machine()}, {platform.processor() or platform.system()}, "
        f"python {platform.python_version()}; tiny model, loopback, {args.runs} run(s), {args.tokens} tokens",
        "",
        "| workers | load s (median, spread) | × 0 workers | prompt tok/s | gen tok/s | × 0 workers |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        model = write_tiny_model(Path(folder) / "tiny.gguf")
        baseline: dict[str, float] = {}
        for workers in (0, 1, 2):
            runs = [one_run(model, llama_cpp, workers, args.tokens) for _ in range(args.runs)]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            spread = {key: max(run[key] for run in runs) - min(run[key] for run in runs) for key in runs[0]}
            baseline = baseline or median
            load_ratio = median["load_s"] / baseline["load_s"]
            gen_ratio = median["gen_tps"] / baseline["gen_tps"]
            lines.append(
                f"| {workers} | {median['load_s']:.2f} (±{spread['load_s'] / 2:.2f}) | {load_ratio:.2f} | "
                f"{median['prompt_tps']:.0f} | {median['gen_tps']:.0f} (±{spread['gen_tps'] / 2:.0f}) | "
                f"{gen_ratio:.2f} |"
            )
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

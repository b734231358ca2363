"""Is the speed forecast right? `nemolaunch plan MODEL.gguf` against llama-server's measured tokens/s.

For Ultra-shaped models of several sizes and weight types (nemolaunch.scaled_model: the Ultra's layer
pattern and expert routing, random weights in F32, F16, Q8_0 or Q4_0), this asks `nemolaunch plan MODEL
--json` for its forecast (which measures this machine's RAM bandwidth), then serves the model with
`nemolaunch serve` and reads llama-server's own `timings.predicted_per_second` for a fixed number of
generated tokens (median of --runs). The ratio forecast ÷ measured is the error; the issue's bar is within 1.5×.

    .venv/bin/python benchmarks/speed_vs_forecast.py [--sizes 1] [--types F32,F16,Q8_0,Q4_0] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from bench_servers import chat, free_port, nemolaunch, publish, serving, stop, wait_until


def model_for(size_gb: float, folder: Path, weight_type: str = "Q8_0") -> Path:
    from nemolaunch.scaled_model import shape_for_size, write_scaled_model

    shape = shape_for_size(int(size_gb * 1e9), weight_type=weight_type)
    suffix = "" if weight_type == "Q8_0" else f"-{weight_type}"
    path = folder / f"scaled-{shape.n_embd}x{len(shape.layers)}{suffix}.gguf"
    if not path.exists():
        write_scaled_model(path, shape)
    return path


def forecast(model: Path, llama_cpp: Path) -> dict[str, object]:
    result = subprocess.run(
        nemolaunch("plan", str(model), "--json"),
        capture_output=True, text=True, check=True, env={**os.environ, "NEMOLAUNCH_LLAMA_CPP": str(llama_cpp)},
    )  # fmt: skip
    data = json.loads(result.stdout)
    return data["quants"][0]["speed"]


def measure(model: Path, llama_cpp: Path, *, runs: int, tokens: int) -> list[float]:
    port = free_port()
    server = subprocess.Popen(
        nemolaunch("serve", str(model), "--port", str(port), "--llama-cpp", str(llama_cpp), "--parallel", "1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: serving(port, server))
        rates = []
        for run in range(runs + 1):
            body = {
                "messages": [{"role": "user", "content": f"Count the waves, round {run}."}],
                "max_tokens": tokens,
                "ignore_eos": True,
                "cache_prompt": False,
            }
            timings = chat(port, body)["timings"]
            if run:  # the first warms the page cache and the allocator
                rates.append(timings["predicted_per_second"])
        return rates
    finally:
        stop(server)


def main() -> int:
    from nemolaunch.adapters.llamacpp import find_binary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, default=None)
    parser.add_argument("--sizes", default="1", help="model sizes in GB, comma-separated")
    parser.add_argument("--types", default="F32,F16,Q8_0,Q4_0", help="weight types, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "nemolaunch" / "scaled")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = parser.parse_args()
    llama_cpp = find_binary("llama-server", explicit_dir=args.llama_cpp).path.parent
    args.models.mkdir(parents=True, exist_ok=True)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} logical cores; Ultra-shaped models; "
        f"{args.runs} run(s) of {args.tokens} tokens, median (spread)",
        "",
        "| model | weights | size | forecast tok/s | measured tok/s | forecast ÷ measured | RAM GB/s (source) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    worst = 1.0
    runs = [(float(size), kind) for size in args.sizes.split(",") for kind in args.types.split(",")]
    for size, kind in runs:
        model = model_for(size, args.models, kind)
        speed = forecast(model, llama_cpp)
        rates = measure(model, llama_cpp, runs=args.runs, tokens=args.tokens)
        measured = statistics.median(rates)
        predicted = speed["generation_tokens_per_s"]
        ratio = predicted / measured if predicted and measured else float("nan")
        worst = max(worst, ratio, 1 / ratio) if ratio == ratio else worst
        ram = next(part for part in speed["parts"] if part["device"] == "RAM")
        lines.append(
            f"| {model.name} | {kind} | {model.stat().st_size / 1e9:.2f} GB | {predicted:.1f} | {measured:.1f} "
            f"(±{(max(rates) - min(rates)) / 2:.1f}) | {ratio:.2f} | "
            f"{ram['bandwidth_bytes_per_s'] / 1e9:.1f} ({ram['bandwidth_source']}) |"
        )
    lines += ["", f"worst factor: {worst:.2f}"]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

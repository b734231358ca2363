"""A model larger than memory, run with its experts paged from disk: measured tokens/s against the forecast.

An Ultra-shaped model of ~4 GB (nemolaunch.scaled_model with the Ultra's 512 experts, 22 routed) is
served by `nemolaunch serve --allow-disk` inside a memory cgroup limited to 25 %, 50 % and 75 % of its
size (the limit bounds the page cache too), and once without a limit as the in-memory baseline. The
model's pages are dropped first (posix_fadvise DONTNEED) so that the group pays for every page it reads.
The forecast comes from `nemolaunch plan MODEL --allow-disk --json` for a hardware file that is this
machine (`doctor --json`: its measured RAM bandwidth and disk read speeds) with the cgroup's limit as its
memory. Generation and prompt tokens/s are llama-server's own timings (median of --runs, after one
warm-up request); the issue's bar is the forecast within 2x of the measured generation speed.

Needs root for the cgroup (v2 memory.max or v1 memory.limit_in_bytes).

    .venv/bin/python benchmarks/disk_backed.py [--size-gb 4] [--runs 3] [--tokens 32] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_servers import chat, free_port, nemolaunch, publish, serving, stop, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from memory_cgroup import drop_cached_pages, make_memory_cgroup

LIMITS = (0.25, 0.5, 0.75)
CTX_SIZE = 4096
#: About 490 tokens with the tiny vocabulary (~6 a word): one of llama.cpp's 512-token micro-batches, which
#: touches nearly every expert.
PROMPT_WORDS = 80


def ultra_shaped(size_gb: float, folder: Path) -> Path:
    """The widest Ultra-routed shape (512 experts, 22 used) within ``size_gb``."""
    from nemolaunch.scaled_model import ScaledShape, weights_bytes, write_scaled_model

    width = 256
    while weights_bytes(ScaledShape(width + 256, 2, 512, 22)) <= size_gb * 1e9:
        width += 256
    path = folder / f"ultra-shaped-{width}x2-e512.gguf"
    if not path.exists():
        write_scaled_model(path, ScaledShape(width, 2, 512, 22))
    return path


def machine_facts(folder: Path, limit: int | None) -> Path:
    """This machine's facts (measured RAM and disk), with ``limit`` as its memory; no GPUs (a CPU build)."""
    facts = json.loads(
        subprocess.run(nemolaunch("doctor", "--json"), capture_output=True, text=True, check=True).stdout
    )
    facts["gpus"] = []
    if limit is not None:
        facts["memory"].update(total_bytes=limit, available_bytes=limit)
    path = folder / f"facts-{limit or 'all'}.json"
    path.write_text(json.dumps(facts))
    return path


def forecast(model: Path, facts: Path) -> dict[str, object]:
    args = ("plan", str(model), "--hardware", str(facts), "--allow-disk", "--json", "--ctx-size", str(CTX_SIZE))
    result = subprocess.run(nemolaunch(*args, "--parallel", "1"), capture_output=True, text=True, check=True)
    data = json.loads(result.stdout)
    return {"placement": data["placement"], "disk": data["quants"][0]["disk"], **data["quants"][0]["speed"]}


def measure(model: Path, facts: Path, llama_cpp: Path, *, limit: int | None, runs: int, tokens: int) -> dict:
    port = free_port()
    drop_cached_pages(model)
    group = make_memory_cgroup(f"nl17-bench-{os.getpid()}-{limit or 0}", limit) if limit else None
    argv = nemolaunch(
        "serve", str(model), "--allow-disk", "--hardware", str(facts), "--port", str(port), "--llama-cpp",
        str(llama_cpp), "--parallel", "1", "--ctx-size", str(CTX_SIZE),
    )  # fmt: skip
    server = subprocess.Popen(
        (group.prefix() if group else []) + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: serving(port, server), timeout_s=900)
        generation, prompt, read_per_token = [], [], []
        for run in range(runs + 1):
            # A long prompt alone (one token out) for the prompt speed; then a short one for generation alone,
            # with the bytes llama-server read from storage meanwhile (/proc/PID/io: the server is this pid,
            # exec'd from sh and nemolaunch).
            words = " ".join(f"wave{(run * 7 + index) % 97}" for index in range(PROMPT_WORDS))
            long = {"messages": [{"role": "user", "content": f"Round {run}. Count the waves: {words}"}],
                    "max_tokens": 1, "cache_prompt": False}  # fmt: skip
            prompt_timings = chat(port, long)["timings"]
            before = _read_bytes(server.pid)
            short = {"messages": [{"role": "user", "content": f"Go on, {run}."}], "max_tokens": tokens,
                     "ignore_eos": True, "cache_prompt": False}  # fmt: skip
            timings = chat(port, short)["timings"]
            if run:  # the first warms what the page cache can keep
                prompt.append(prompt_timings["prompt_per_second"])
                generation.append(timings["predicted_per_second"])
                read_per_token.append((_read_bytes(server.pid) - before) / timings["predicted_n"])
        return {
            "generation": generation,
            "prompt": prompt,
            "prompt_tokens": prompt_timings["prompt_n"],
            "read_per_token": statistics.median(read_per_token),
            "peak": group.peak_bytes() if group else None,
            "oom_kills": group.oom_kills() if group else 0,
        }
    finally:
        stop(server)
        if group:
            group.remove()


def _read_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    from nemolaunch.adapters.llamacpp import find_binary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, default=None)
    parser.add_argument("--size-gb", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "nl17-disk-backed")
    parser.add_argument("--limits", default=",".join(str(share) for share in LIMITS),
                        help="memory limits as shares of the model's size; 0 is the in-memory baseline")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = parser.parse_args()
    llama_cpp = find_binary("llama-server", explicit_dir=args.llama_cpp).path.parent
    args.models.mkdir(parents=True, exist_ok=True)
    model = ultra_shaped(args.size_gb, args.models)
    size = model.stat().st_size
    everything = json.loads(machine_facts(args.models, None).read_text())
    disk, memory = everything["disk"], everything["memory"]
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} logical cores (shared with other work), RAM "
        f"{memory['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, disk {disk['read_bytes_per_s'] / 1e9:.2f} GB/s "
        f"sequential / {disk['random_read_bytes_per_s'] / 1e9:.2f} GB/s random 1-4 MiB (doctor, measured); "
        f"model {model.name}, {size / 1e9:.2f} GB, 22 of 512 experts routed; ctx {CTX_SIZE}, 1 slot; "
        f"{args.runs} run(s) of {args.tokens} tokens after a ~{PROMPT_WORDS}-word prompt, median",
        "",
        "| memory limit | placement | on disk | gen tok/s forecast | measured | forecast ÷ measured "
        "| disk read per token forecast | measured | prompt tok/s forecast | measured | forecast ÷ measured "
        "| cgroup peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = 1.0
    for share in (float(word) or None for word in f"0,{args.limits}".split(",")):
        limit = round(size * share) if share else None
        facts = machine_facts(args.models, limit)
        predicted = forecast(model, facts)
        result = measure(model, facts, llama_cpp, limit=limit, runs=args.runs, tokens=args.tokens)
        gen, pp = statistics.median(result["generation"]), statistics.median(result["prompt"])
        gen_ratio = predicted["generation_tokens_per_s"] / gen
        pp_ratio = predicted["prompt_tokens_per_s"] / pp
        if share:
            worst = max(worst, gen_ratio, 1 / gen_ratio)
        on_disk = predicted["disk"]["disk_bytes"] / 1e9 if predicted["disk"] else 0.0
        forecast_read = predicted["disk"]["disk_read_bytes_per_token"] if predicted["disk"] else 0.0
        label = f"{share:.0%} ({limit / 1e9:.2f} GB)" if share and limit else "none (all in RAM)"
        peak = f"{result['peak'] / 1e9:.2f} GB" if result["peak"] else "-"
        if result["oom_kills"]:
            peak += f", {result['oom_kills']} OOM kill(s)"
        lines.append(
            f"| {label} | {predicted['placement']} | {on_disk:.2f} GB | {predicted['generation_tokens_per_s']:.2f} "
            f"| {gen:.2f} | {gen_ratio:.2f} | {forecast_read / 1e6:.0f} MB | {result['read_per_token'] / 1e6:.0f} MB "
            f"| {predicted['prompt_tokens_per_s']:.1f} | {pp:.1f} "
            f"({result['prompt_tokens']} tokens) | {pp_ratio:.2f} | {peak} |"
        )
        print(lines[-1], flush=True)
    lines += ["", f"worst generation factor under a limit: {worst:.2f}"]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

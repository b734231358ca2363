"""How close is the memory forecast to what llama-server really uses?

Runs the real llama-server on the embedded tiny Nemotron-architecture model at
several context sizes and slot counts, asks one chat completion (so the compute
graph runs), reads the process's peak resident memory (VmHWM), and prints the
forecast beside it as a ratio. The forecast's safety margin is shown apart: the
prediction is everything before it, and the total with margin must cover the peak.

    .venv/bin/python benchmarks/forecast_vs_rss.py [--llama-cpp DIR]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peak_rss(server: Path, model: Path, *, ctx_size: int, parallel: int) -> int:
    port = free_port()
    process = subprocess.Popen(
        [str(server), "--model", str(model), "--ctx-size", str(ctx_size), "--parallel", str(parallel),
         "--port", str(port), "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        body = json.dumps({"messages": [{"role": "user", "content": "hello " * 50}], "max_tokens": 16}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            reply.read()
        status = Path(f"/proc/{process.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return kib * 1024
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    from nemolaunch.adapters.gguf_header import read_architecture
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.core.forecast import forecast_memory
    from nemolaunch.tiny_model import write_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, default=None)
    args = parser.parse_args()
    server = find_binary("llama-server", explicit_dir=args.llama_cpp).path
    with tempfile.TemporaryDirectory() as folder:
        model = write_tiny_model(Path(folder) / "tiny.gguf")
        architecture = read_architecture(model)
        assert architecture is not None
        weights = model.stat().st_size
        print(f"{'ctx':>6} {'slots':>5} {'measured MB':>12} {'forecast MB':>12} {'ratio':>6} {'with margin':>12}")
        worst = 0.0
        for ctx_size, parallel in ((512, 1), (4096, 1), (4096, 4), (4096, 8)):
            measured = peak_rss(server, model, ctx_size=ctx_size, parallel=parallel)
            forecast = forecast_memory(weights, architecture, ctx_size=ctx_size, parallel=parallel)
            predicted = forecast.predicted
            ratio = predicted / measured
            worst = max(worst, abs(ratio - 1))
            print(
                f"{ctx_size:>6} {parallel:>5} {measured / 1e6:>12.2f} {predicted / 1e6:>12.2f} {ratio:>6.3f} "
                f"{forecast.total / 1e6:>12.1f}"
            )
            if forecast.total < measured:
                print("the forecast with its margin is below the measured peak", file=sys.stderr)
                return 1
        print(f"worst deviation: {worst:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

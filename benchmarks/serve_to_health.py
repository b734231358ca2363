"""P2: from launch to /health, `nemolaunch serve` against bare llama-server, on the tiny and a 2 GB model.

.venv/bin/python benchmarks/serve_to_health.py [--runs 5] [--sizes tiny,2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_servers import free_port, nemolaunch, serving, stop, wait_until


def to_health(argv: list[str], port: int) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: serving(port, process), timeout_s=300)
        return time.perf_counter() - started
    finally:
        stop(process)


def main() -> int:
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.scaled_model import shape_for_size, write_scaled_model
    from nemolaunch.tiny_model import write_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="tiny,2", help="tiny and/or scaled model sizes in GB")
    parser.add_argument("--llama-cpp", type=Path, default=None)
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "nemolaunch" / "scaled")
    args = parser.parse_args()
    server = find_binary("llama-server", explicit_dir=args.llama_cpp).path
    print(f"| model | bare llama-server s | nemolaunch serve s | difference s | ratio |  (median of {args.runs})")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            if size == "tiny":
                model = write_tiny_model(Path(folder) / "tiny.gguf")
            else:
                shape = shape_for_size(int(float(size) * 1e9))
                model = args.models / f"scaled-{shape.n_embd}x{len(shape.layers)}.gguf"
                if not model.exists():
                    args.models.mkdir(parents=True, exist_ok=True)
                    write_scaled_model(model, shape)
            bare, wrapped = [], []
            for _ in range(args.runs):  # interleaved: both see the same page cache and load
                port = free_port()
                bare.append(to_health([str(server), "-m", str(model), "--port", str(port), "-c", "4096"], port))
                port = free_port()
                argv = nemolaunch("serve", str(model), "--port", str(port), "--llama-cpp", str(server.parent),
                                  "--ctx-size", "4096")  # fmt: skip
                wrapped.append(to_health(argv, port))
            b, w = statistics.median(bare), statistics.median(wrapped)
            label = f"{model.name} ({model.stat().st_size / 1e9:.2f} GB)"
            print(f"| {label} | {b:.3f} | {w:.3f} | {w - b:+.3f} | {w / b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

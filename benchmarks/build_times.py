"""P6: building llama.cpp — a rebuild that has nothing to do, and a first build against Unsloth's recipe.

The no-op: `nemolaunch build` again with the same source and flags (its stamp says nothing changed),
against `python -c pass`. With --cold, a first CPU build through `nemolaunch build` into a fresh prefix
(ccache off) against Unsloth's published recipe on the same tree in the same run:
`cmake -B build -DBUILD_SHARED_LIBS=OFF -DGGML_CUDA=OFF` then
`cmake --build build --config Release -j --clean-first --target llama-cli llama-mtmd-cli llama-server
llama-gguf-split`. Each is minutes on a small machine: --cold is for a quiet one.

    .venv/bin/python benchmarks/build_times.py [--source ARCHIVE] [--runs 5] [--cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNSLOTH_TARGETS = ("llama-cli", "llama-mtmd-cli", "llama-server", "llama-gguf-split")


def timed(argv: list[str], **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def source_archive(given: Path | None) -> Path:
    if given is not None:
        return given
    out = subprocess.run(["bash", str(REPO / "scripts" / "fetch_llamacpp_source.sh")], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
    return Path(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="llama.cpp source archive or tree")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time two first builds (minutes each)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    source = source_archive(args.source)
    build = [
        sys.executable,
        "-m",
        "nemolaunch",
        "build",
        "--backend",
        "cpu",
        "--source",
        str(source),
    ]
    # The no-op is timed on the build scripts/test.sh and quickstart.sh make (their flags: the web chat
    # as `auto` gives it): with a flag of its own it would be a second, different build, minutes of
    # compiling on a fresh HOME before the first no-op.
    timed(build)  # make sure the build exists: what follows is the no-op
    no_op = [timed(build) for _ in range(args.runs)]
    python = [timed([sys.executable, "-c", "pass"]) for _ in range(args.runs)]
    print(f"| what | median s | spread s |  ({args.runs} runs, {args.jobs} jobs)")
    print("|---|---:|---:|")
    print(f"| python -c pass | {statistics.median(python):.3f} | {max(python) - min(python):.3f} |")
    print(f"| nemolaunch build, up to date | {statistics.median(no_op):.3f} | {max(no_op) - min(no_op):.3f} |")
    if not args.cold:
        return 0
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = {**os.environ, "CCACHE_DISABLE": "1"}
        # No web chat: Unsloth's recipe builds none either.
        ours = timed([*build, "--web-ui", "off", "--prefix", str(root / "ours"), "--jobs", str(args.jobs)], env=env)
        with tarfile.open(source) as archive:
            archive.extractall(root / "tree", filter="data")
        tree = next(
            path.parent
            for path in (root / "tree").rglob("CMakeLists.txt")
            if (path.parent / "include" / "llama.h").exists()
        )
        configure = ["cmake", str(tree), "-B", str(root / "unsloth"), "-DBUILD_SHARED_LIBS=OFF", "-DGGML_CUDA=OFF",
                     "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF"]  # fmt: skip
        unsloth = timed(configure, env=env)
        unsloth += timed(["cmake", "--build", str(root / "unsloth"), "--config", "Release", "-j", str(args.jobs),
                          "--clean-first", "--target", *UNSLOTH_TARGETS], env=env)  # fmt: skip
    print(f"| first build, Unsloth's recipe | {unsloth:.0f} | (one run) |")
    print(f"| first build, nemolaunch build | {ours:.0f} | (one run; {ours / unsloth:.2f}× Unsloth's) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

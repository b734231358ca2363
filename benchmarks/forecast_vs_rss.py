"""How close is the memory forecast to what llama-server really uses?

Runs the real llama-server on the embedded tiny Nemotron-architecture model at
several context sizes and slot counts, asks one chat completion (so the compute
graph runs), reads the process's peak resident memory (VmHWM), and prints the
forecast beside it as a ratio. The forecast's safety margin is shown apart: the
prediction is everything before it, and the total with margin must cover the peak.

With ``--gpu`` (a CUDA build on an NVIDIA machine) it also samples the server's
GPU memory through NVML while it loads and answers, and holds the forecast for
one CUDA GPU against peak VRAM + peak RSS: the planner's budget on a CUDA machine
is GPU memory and RAM together.

    .venv/bin/python benchmarks/forecast_vs_rss.py [--llama-cpp DIR] [--gpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class VramSampler:
    """Peak GPU memory of one process, sampled through NVML every few milliseconds.

    NVML names a process by its pid in the host's pid namespace; in a container the server's
    pid may never appear. Then the peak rise of the GPUs' used memory over the baseline taken
    before the server started stands in for it (exact on a machine nothing else uses), and the
    report says which of the two it is.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self._interval_s = interval_s
        self._baseline = self._device_used()
        self.pid: int | None = None
        self.peak_process = 0
        self.peak_device_rise = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _device_used(self) -> int:
        return sum(int(self._nvml.nvmlDeviceGetMemoryInfo(handle).used) for handle in self._handles)

    def _process_used(self) -> int:
        used = 0
        for handle in self._handles:
            for process in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                # usedGpuMemory is None where the driver will not say (some vGPU and MIG set-ups).
                if process.pid == self.pid and process.usedGpuMemory:
                    used += int(process.usedGpuMemory)
        return used

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_device_rise = max(self.peak_device_rise, self._device_used() - self._baseline)
            if self.pid is not None:
                self.peak_process = max(self.peak_process, self._process_used())
            self._stop.wait(self._interval_s)

    def __enter__(self) -> VramSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._nvml.nvmlShutdown()

    @property
    def peak(self) -> tuple[int, str]:
        """The peak in bytes and how it was measured."""
        if self.peak_process:
            return self.peak_process, "process"
        return max(self.peak_device_rise, 0), "device rise"


def nvml_problem() -> str | None:
    """Why NVML cannot measure GPU memory here (no driver library, no GPU), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # pynvml's errors, ImportError, OSError: each is one reason
        return str(exc) or type(exc).__name__
    return None if count else "NVML lists no GPU"


@dataclass(frozen=True)
class Measured:
    rss: int  # peak resident memory (VmHWM)
    buffers: int = 0  # what llama.cpp says it reserved: model, KV, recurrent state, compute, output buffers
    vram: int = 0  # peak GPU memory (--gpu)
    vram_method: str = ""  # "process" (NVML's per-process figure) or "device rise"


def measure(server: Path, model: Path, *, ctx_size: int, parallel: int, gpu: bool) -> Measured:
    # Sampling starts before the server does: the baseline is the GPUs without it.
    with VramSampler() if gpu else contextlib.nullcontext() as sampler:
        port = free_port()
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in the finally below, after the server
        process = subprocess.Popen(
            [str(server), "--model", str(model), "--ctx-size", str(ctx_size), "--parallel", str(parallel),
             "--port", str(port), "--threads", "1", "-lv", "4"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if sampler is not None:
            sampler.pid = process.pid
        try:
            rss = _peak_rss_after_one_answer(process, port)
            log.seek(0)
            buffers = _reserved_buffers(log.read())
            if sampler is None:
                return Measured(rss=rss, buffers=buffers)
            time.sleep(0.2)  # a last few samples after the answer
            vram, method = sampler.peak
            return Measured(rss=rss, buffers=buffers, vram=vram, vram_method=method)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


_BUFFER_LINE = re.compile(r"(?:model|KV|RS|compute|output) buffer size =\s+([0-9.]+) MiB")


def _reserved_buffers(log: str) -> int:
    """The buffers llama.cpp's log says it reserved at load, in bytes (before the first request)."""
    head = log.split("model loaded")[0]
    return round(sum(float(size) for size in _BUFFER_LINE.findall(head)) * 1024**2)


def _peak_rss_after_one_answer(process: subprocess.Popen[bytes], port: int) -> int:
    deadline = time.monotonic() + 120  # a CUDA build's first start loads its kernels: longer than the CPU's
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


def _model(name: str, folder: Path, cache: Path) -> tuple[Path, tuple[tuple[int, int], ...]]:
    """A model to measure and its (context, slots) pairs: the tiny one at four, a scaled one at two contexts."""
    if name == "tiny":
        from nemolaunch.tiny_model import write_tiny_model

        return write_tiny_model(folder / "tiny.gguf"), ((512, 1), (4096, 1), (4096, 4), (4096, 8))
    from nemolaunch.scaled_model import shape_for_size, write_scaled_model

    shape = shape_for_size(int(float(name.removeprefix("scaled-")) * 1e9))
    path = cache / f"scaled-{shape.n_embd}x{len(shape.layers)}.gguf"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        write_scaled_model(path, shape)
    return path, ((4096, 1), (32768, 1))


def main() -> int:
    from nemolaunch.adapters.gguf_header import read_architecture
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.core.forecast import forecast_memory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, default=None, help="folder holding llama-server")
    parser.add_argument(
        "--gpu", action="store_true", help="a CUDA build: measure peak VRAM (NVML) too; the forecast counts one GPU"
    )
    parser.add_argument(
        "--models",
        default="tiny",
        help="tiny and/or scaled Ultra-shaped models by size, e.g. tiny,scaled-0.5,scaled-2,scaled-4 (GB)",
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "nemolaunch" / "scaled")
    args = parser.parse_args()
    if args.gpu and (problem := nvml_problem()) is not None:
        print(f"forecast_vs_rss: --gpu needs NVML and an NVIDIA GPU ({problem})", file=sys.stderr)
        return 2
    server = find_binary("llama-server", explicit_dir=args.llama_cpp).path
    gpus = 1 if args.gpu else 0
    with tempfile.TemporaryDirectory() as folder:
        vram_columns = f" {'VRAM MB':>9} {'how':>11} {'RSS MB':>8}" if args.gpu else ""
        print(
            f"{'model':>16} {'ctx':>6} {'slots':>5}{vram_columns} {'measured MB':>12} {'forecast MB':>12} "
            f"{'ratio':>6} {'with margin':>12} {'buffers MB':>11} {'forecast':>9} {'ratio':>6}"
        )
        worst = 0.0
        worst_buffers = 0.0
        covered = True
        runs = [
            (model, ctx_size, parallel)
            for name in args.models.split(",")
            for model, combos in [_model(name.strip(), Path(folder), args.cache)]
            for ctx_size, parallel in combos
        ]
        for model, ctx_size, parallel in runs:
            architecture = read_architecture(model)
            assert architecture is not None
            weights = model.stat().st_size
            measured = measure(server, model, ctx_size=ctx_size, parallel=parallel, gpu=args.gpu)
            total_measured = measured.rss + measured.vram
            forecast = forecast_memory(
                weights, architecture, ctx_size=ctx_size, parallel=parallel, gpu_devices=gpus, cuda_devices=gpus
            )
            predicted = forecast.predicted
            ratio = predicted / total_measured
            worst = max(worst, abs(ratio - 1))
            vram_cells = (
                f" {measured.vram / 1e6:>9.2f} {measured.vram_method:>11} {measured.rss / 1e6:>8.2f}"
                if args.gpu
                else ""
            )
            # llama.cpp's own buffer lines against the forecast's buffers (all but llama-server itself).
            forecast_buffers = forecast.weights + forecast.kv + forecast.recurrent + forecast.compute
            buffer_ratio = forecast_buffers / measured.buffers if measured.buffers else float("nan")
            worst_buffers = max(worst_buffers, abs(buffer_ratio - 1)) if measured.buffers else worst_buffers
            print(
                f"{model.stem[:16]:>16} {ctx_size:>6} {parallel:>5}{vram_cells} {total_measured / 1e6:>12.2f} "
                f"{predicted / 1e6:>12.2f} {ratio:>6.3f} {forecast.total / 1e6:>12.1f} {measured.buffers / 1e6:>11.2f} "
                f"{forecast_buffers / 1e6:>9.2f} {buffer_ratio:>6.3f}"
            )
            if forecast.total < total_measured:
                covered = False
        print(f"worst deviation: {worst:.1%} from peak RSS, {worst_buffers:.1%} from llama.cpp's reserved buffers")
        if args.gpu:
            # The CUDA context and cuBLAS workspace sit in the margin (512 MiB a GPU), not in the prediction.
            print("measured = peak VRAM + peak RSS; the forecast's CUDA context allowance is in its margin")
        if not covered:
            print("the forecast with its margin is below the measured peak", file=sys.stderr)
            return 1
        print("the forecast with its margin covers every measured peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())

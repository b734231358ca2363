"""Which llama.cpp binary a command runs, and whether it can use this machine's GPU."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nemolaunch.cli.output import warn

if TYPE_CHECKING:
    from nemolaunch.adapters.llamacpp import Found

#: Options with which a person chooses the devices, the CPU included: then a CPU-only build may be the point.
_DEVICE_CHOICES = ("-ngl", "--gpu-layers", "--n-gpu-layers", "-dev", "--device")
_GPU_WORDS = {"cuda": "an NVIDIA GPU driver", "metal": "an Apple GPU (Metal)"}


def find_llama_binary(binary: str, *, llama_cpp: Path | None, build: bool, dry_run: bool) -> Found:
    """The binary to run; with ``build`` (and not a dry run), a fresh build when none is found."""
    from nemolaunch.adapters.llamacpp import Found, find_binary, read_stamp
    from nemolaunch.errors import LlamaCppNotFound

    try:
        return find_binary(binary, explicit_dir=llama_cpp)
    except LlamaCppNotFound:
        if not build or dry_run:
            raise
    from nemolaunch.cli.build import build_default

    bin_dir = build_default()
    stamp = read_stamp(bin_dir.parent)
    return Found(bin_dir / binary, "nemolaunch build", stamp.backend if stamp else None)


def warn_if_gpus_go_unused(found: Found, passthrough: tuple[str, ...] = ()) -> None:
    """A CPU-only llama.cpp on a GPU machine runs a 300 GB model at a crawl: say so before it loads.

    For this machine only: the caller skips it when planning for another (``--hardware``).
    """
    from nemolaunch.adapters.llamacpp import list_devices, machine_backends, runs_on

    gpu_backend = machine_backends()[0]
    if gpu_backend == "cpu" or any(word.split("=", 1)[0] in _DEVICE_CHOICES for word in passthrough):
        return
    if found.backend == gpu_backend:
        return
    if found.backend is not None:
        what = f"is a {found.backend} build"
    else:
        devices = list_devices(found.path)
        if devices is None or runs_on(devices, gpu_backend):
            return  # no answer is no evidence; a GPU device listed is all we want to know
        what = f"lists no {gpu_backend.upper()} device" + (f" ({', '.join(devices)})" if devices else "")
    warn(
        f"this machine has {_GPU_WORDS[gpu_backend]}, but {found.path} {what}: the model would run on the CPU "
        f"alone. Build for the GPU with `nemolaunch build --backend {gpu_backend}`, or pass --llama-cpp with a "
        "GPU build."
    )

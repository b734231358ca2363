"""How much memory a process holds: its resident set, and on NVIDIA GPUs what NVML says it uses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any


def resident_bytes(pid: int) -> int | None:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def gpu_bytes_by_pid(pids: Iterable[int], nvml: Any | None = None) -> dict[int, dict[int, int]]:
    """pid -> {GPU index: bytes used} for the given pids; empty where there is no NVIDIA GPU or driver.

    ``nvml`` is the pynvml module (imported here when not given).
    """
    wanted = set(pids)
    if not wanted:
        return {}
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return {}
    try:
        nvml.nvmlInit()
    except Exception:  # no driver, no GPU, a library that fails to load: no GPU memory to show
        return {}
    found: dict[int, dict[int, int]] = {}
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            processes = []
            for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    processes += list(getattr(nvml, query)(handle))
                except (nvml.NVMLError, AttributeError):
                    continue
            for process in processes:
                used = getattr(process, "usedGpuMemory", None)
                if process.pid in wanted and isinstance(used, int):
                    # A process on both lists (compute and graphics) is counted once per device.
                    found.setdefault(process.pid, {})[index] = max(used, found.get(process.pid, {}).get(index, 0))
    except nvml.NVMLError:
        pass
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    return found

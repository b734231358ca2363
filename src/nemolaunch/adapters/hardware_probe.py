"""Probe this machine for the hardware facts planning needs.

Each probe only reads: it never prints and never changes the environment.
Problems worth telling the user come back as warnings in the result; the
caller decides how to show them. Every parser takes raw values or text (the
NVML module, /proc/cpuinfo, sysctl output), so tests feed recorded outputs
through the same code the real probe runs.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from nemolaunch.core.hardware import (
    CpuFacts,
    DiskFacts,
    GpuFacts,
    HardwareFacts,
    MemoryFacts,
    metal_working_set_bytes,
)

log = logging.getLogger(__name__)

SysctlReader = Callable[[str], str | None]


@dataclass(frozen=True)
class CudaProbe:
    gpus: tuple[GpuFacts, ...] = ()
    driver_version: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class HardwareProbe:
    facts: HardwareFacts
    warnings: tuple[str, ...] = ()
    # Kept out of the facts schema: planning does not use it, but people
    # debugging a launch do.
    cuda_driver_version: str | None = None


@dataclass(frozen=True)
class VisibleDevices:
    indices: tuple[int, ...]  # NVML indices, in CUDA_VISIBLE_DEVICES order
    ignored: tuple[str, ...] = field(default=())  # entries from the first one CUDA would reject


def probe_hardware(
    *,
    model_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    measure_bandwidth: bool = False,
    measure_disk: bool = False,
) -> HardwareProbe:
    """Facts about this machine. ``model_dir`` is where models will be stored
    (default: the Hugging Face hub cache); ``measure_bandwidth`` reads RAM for a fraction of a
    second to measure its bandwidth (for the speed forecast); ``measure_disk`` reads a scratch file
    there for about a second (for a disk-backed forecast)."""
    environ = os.environ if environ is None else environ
    system = platform.system().lower()
    machine = platform.machine().lower()
    cpu = probe_cpu(system)
    memory = probe_memory()
    if measure_bandwidth:
        from nemolaunch.adapters.memory_bandwidth import measure_read_bandwidth

        threads = cpu.physical_cores or cpu.logical_cores or 1
        memory = memory.model_copy(update={"bandwidth_bytes_per_s": measure_read_bandwidth(threads) or None})
    warnings: list[str] = []
    driver_version = None
    if system == "darwin" and machine == "arm64":
        gpus: tuple[GpuFacts, ...] = (probe_metal(memory),)
    else:
        cuda = probe_cuda(environ=environ, unified_memory=memory)
        gpus = cuda.gpus
        warnings.extend(cuda.warnings)
        driver_version = cuda.driver_version
    facts = HardwareFacts(
        os=system,
        arch=machine,
        cpu=cpu,
        memory=memory,
        disk=probe_disk(model_dir if model_dir is not None else default_model_dir(), measure=measure_disk),
        gpus=list(gpus),
    )
    return HardwareProbe(facts=facts, warnings=tuple(warnings), cuda_driver_version=driver_version)


# --- CUDA through NVML -------------------------------------------------------------
def probe_cuda(
    nvml: ModuleType | Any | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    unified_memory: MemoryFacts | None = None,
) -> CudaProbe:
    """The CUDA GPUs NVML reports, limited to those CUDA_VISIBLE_DEVICES lets llama.cpp see.

    ``nvml`` is the pynvml module (imported here when not given); tests pass a
    stand-in holding recorded values. No NVML library or no driver means no
    CUDA GPUs, quietly; NVML failing after that is a warning and a CPU plan.
    ``unified_memory`` supplies the sizes of GPUs whose memory is the system
    RAM (NVML cannot report memory for them).
    """
    environ = os.environ if environ is None else environ
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            log.debug("pynvml is not installed: no CUDA GPUs")
            return CudaProbe()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if _nvml_absent(nvml, exc):
            log.debug("no NVML library or NVIDIA driver (%s): no CUDA GPUs", exc)
            return CudaProbe()
        return CudaProbe(warnings=(f"NVML failed to start ({exc}): planning without CUDA GPUs",))
    try:
        return _read_cuda_devices(nvml, environ, unified_memory)
    except nvml.NVMLError as exc:
        return CudaProbe(warnings=(f"NVML failed while reading the GPUs ({exc}): planning without CUDA GPUs",))
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)


def _read_cuda_devices(nvml: Any, environ: Mapping[str, str], unified_memory: MemoryFacts | None) -> CudaProbe:
    warnings: list[str] = []
    try:
        driver_version: str | None = _text(nvml.nvmlSystemGetDriverVersion())
    except nvml.NVMLError:
        driver_version = None
    handles = [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(nvml.nvmlDeviceGetCount())]
    uuids = [_text(nvml.nvmlDeviceGetUUID(handle)) for handle in handles]
    visible = select_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"), uuids)
    if visible.ignored:
        warnings.append("CUDA_VISIBLE_DEVICES entries CUDA would not use were ignored: " + ",".join(visible.ignored))
    gpus: list[GpuFacts] = []
    for index in visible.indices:
        handle = handles[index]
        name = _text(nvml.nvmlDeviceGetName(handle))
        try:
            capability: str | None = "{}.{}".format(*nvml.nvmlDeviceGetCudaComputeCapability(handle))
        except nvml.NVMLError:
            capability = None
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            total, free, unified = int(memory.total), int(memory.free), False
        except nvml.NVMLError as exc:
            # Boards whose GPU shares the system RAM (GB10 / DGX Spark) report
            # no memory of their own: the RAM is the GPU's memory.
            if _nvml_code(exc) != getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", object()):
                raise
            if unified_memory is None:
                warnings.append(f"GPU {index} ({name}) reports no memory size: left out of the plan")
                continue
            total, free, unified = unified_memory.total_bytes, unified_memory.available_bytes, True
        gpus.append(
            GpuFacts(
                backend="cuda",
                index=index,
                name=name,
                total_bytes=total,
                free_bytes=free,
                compute_capability=capability,
                unified=unified,
                memory_bandwidth_bytes_per_s=_nvml_bandwidth(nvml, handle),
            )
        )
    return CudaProbe(gpus=tuple(gpus), driver_version=driver_version, warnings=tuple(warnings))


def _nvml_bandwidth(nvml: Any, handle: Any) -> float | None:
    """Peak memory bandwidth: bus width (bits) × the memory's maximum clock (MHz), two transfers a clock.

    (An H100 SXM: 5120 bits × 2619 MHz × 2 / 8 = 3.35 TB/s, its datasheet figure.) None where NVML
    cannot say, as on boards whose GPU shares the system RAM.
    """
    try:
        bus_bits = int(nvml.nvmlDeviceGetMemoryBusWidth(handle))
        clock_mhz = int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM))
    except (nvml.NVMLError, AttributeError):
        return None
    if bus_bits <= 0 or clock_mhz <= 0:
        return None
    return bus_bits / 8 * clock_mhz * 1e6 * 2


def select_visible_devices(value: str | None, uuids: Sequence[str]) -> VisibleDevices:
    """The NVML indices CUDA_VISIBLE_DEVICES=``value`` exposes, in its order.

    Unset means every device; empty (or "-1") means none. Entries are indices
    (taken in NVML/PCI order, which is CUDA's order under
    CUDA_DEVICE_ORDER=PCI_BUS_ID) or GPU UUIDs, whole or a unique prefix. Like
    CUDA, parsing stops at the first entry that is invalid, out of range or
    repeated, and ignores everything after it. MIG instances are not resolved.
    """
    if value is None:
        return VisibleDevices(tuple(range(len(uuids))))
    entries = [entry.strip() for entry in value.split(",")] if value.strip() else []
    chosen: list[int] = []
    for position, entry in enumerate(entries):
        index = _device_index(entry, uuids)
        if index is None or index in chosen:
            return VisibleDevices(tuple(chosen), tuple(entries[position:]))
        chosen.append(index)
    return VisibleDevices(tuple(chosen))


def _device_index(entry: str, uuids: Sequence[str]) -> int | None:
    if re.fullmatch(r"\d+", entry):
        index = int(entry)
        return index if index < len(uuids) else None
    if entry.upper().startswith("GPU-"):
        matches = [index for index, uuid in enumerate(uuids) if uuid.lower().startswith(entry.lower())]
        return matches[0] if len(matches) == 1 else None
    return None


def _nvml_code(exc: BaseException) -> object:
    return getattr(exc, "value", None)


def _nvml_absent(nvml: Any, exc: BaseException) -> bool:
    absent = {
        getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", object()),
        getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()),
    }
    return _nvml_code(exc) in absent


def _text(value: str | bytes) -> str:
    # Older pynvml releases return bytes.
    return value.decode() if isinstance(value, bytes) else value


# --- Apple Metal -------------------------------------------------------------------
def probe_metal(memory: MemoryFacts, *, sysctl: SysctlReader | None = None) -> GpuFacts:
    """The Apple GPU: its budget is the Metal working-set limit, its memory the RAM (unified)."""
    read = sysctl or read_sysctl
    total = metal_working_set_bytes(memory.total_bytes, parse_sysctl_int(read("iogpu.wired_limit_mb")))
    return GpuFacts(
        backend="metal",
        index=0,
        name=(read("machdep.cpu.brand_string") or "Apple GPU").strip(),
        total_bytes=total,
        free_bytes=min(total, memory.available_bytes),
        compute_capability=None,
        unified=True,
    )


def read_sysctl(key: str) -> str | None:
    """``sysctl -n key``'s output, or None when the key or the tool is missing."""
    try:
        result = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("sysctl %s failed: %s", key, exc)
        return None
    return result.stdout if result.returncode == 0 else None


def parse_sysctl_int(text: str | None) -> int | None:
    """The number sysctl printed; None for no output or anything else."""
    if text is None:
        return None
    stripped = text.strip()
    return int(stripped) if re.fullmatch(r"-?\d+", stripped) else None


def parse_sysctl_cpu_features(text: str) -> list[str]:
    """CPU flags from sysctl output, lower-cased.

    Intel Macs list them as words (``machdep.cpu.features``: "FPU SSE4.2 AVX2");
    Apple silicon as ``hw.optional.arm.FEAT_BF16: 1`` lines, of which the ones
    set to 1 count, named without the ``FEAT_`` prefix.
    """
    flags: list[str] = []
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            if value.strip() == "1":
                name = key.strip().rpartition(".")[2].lower().removeprefix("feat_")
                flags.append(name)
        else:
            flags.extend(word.lower() for word in line.split())
    return sorted(set(flags))


# --- CPU, memory, disk ----------------------------------------------------------------
def parse_proc_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """The CPU model and flags from /proc/cpuinfo (x86 "flags", Arm "Features")."""
    model: str | None = None
    flags: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if model is None and key in ("model name", "hardware", "cpu model"):
            model = value.strip() or None
        elif not flags and key in ("flags", "features"):
            flags = sorted(set(value.split()))
    return model, flags


def probe_cpu(system: str, *, sysctl: SysctlReader | None = None) -> CpuFacts:
    import psutil

    model: str | None = None
    flags: list[str] = []
    if system == "linux":
        try:
            model, flags = parse_proc_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            log.debug("cannot read /proc/cpuinfo: %s", exc)
    elif system == "darwin":
        read = sysctl or read_sysctl
        model = (read("machdep.cpu.brand_string") or "").strip() or None
        features = " ".join(text for text in (read("machdep.cpu.features"), read("machdep.cpu.leaf7_features")) if text)
        if features.strip():
            flags = parse_sysctl_cpu_features(features)
        else:
            flags = parse_sysctl_cpu_features(read("hw.optional") or "")
    else:
        model = platform.processor() or None
    return CpuFacts(
        model=model,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True),
        flags=flags,
    )


def probe_memory() -> MemoryFacts:
    import psutil

    memory = psutil.virtual_memory()
    return MemoryFacts(total_bytes=int(memory.total), available_bytes=int(memory.available))


def default_model_dir() -> Path:
    """The Hugging Face hub cache, where downloads land (honours HF_HUB_CACHE and HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def probe_disk(path: Path, *, measure: bool = False) -> DiskFacts | None:
    """Free space where ``path`` is or would be created: its first existing ancestor; with ``measure``,
    its read speeds too (on a scratch file there, removed after)."""
    existing = existing_ancestor(path.expanduser())
    if existing is None:
        return None
    try:
        usage = shutil.disk_usage(existing)
    except OSError as exc:
        log.debug("cannot read free space at %s: %s", existing, exc)
        return None
    speed = None
    if measure:
        from nemolaunch.adapters.disk_speed import measure_disk_read

        speed = measure_disk_read(existing if existing.is_dir() else existing.parent)
    return DiskFacts(
        path=str(path.expanduser()),
        free_bytes=int(usage.free),
        read_bytes_per_s=speed.sequential_bytes_per_s if speed else None,
        random_read_bytes_per_s=speed.random_bytes_per_s if speed else None,
        read_ahead_bytes=read_ahead_bytes(existing) if measure else None,
        fault_read_bytes_per_s=speed.fault_bytes_per_s if speed else None,
    )


def read_ahead_bytes(path: Path) -> int | None:
    """The read-ahead of the block device holding ``path`` (Linux sysfs; a partition's is its disk's)."""
    try:
        device = os.stat(path).st_dev
        block = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}").resolve()
    except OSError:
        return None
    for folder in (block, block.parent):
        setting = folder / "queue" / "read_ahead_kb"
        try:
            return int(setting.read_text().strip()) * 1024
        except (OSError, ValueError):
            continue
    return None


def existing_ancestor(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None

"""`nemolaunch doctor`: what this machine has for running llama.cpp, in one look.

`--json` prints exactly the hardware facts that `--hardware FILE` reads, so a
machine's facts can be recorded once and planned for anywhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from nemolaunch import __version__
from nemolaunch.cli.output import console
from nemolaunch.cli.plan import HardwareOption

BUILD_TOOLS = ("cmake", "c++", "nvcc", "git", "ccache")


def doctor_command(
    hardware: HardwareOption = None,
    llama_cpp: Annotated[
        Path | None,
        typer.Option(
            "--llama-cpp", help="Folder holding llama.cpp's binaries, for the table [env: NEMOLAUNCH_LLAMA_CPP]."
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the hardware facts as JSON (what --hardware FILE reads).")
    ] = False,
) -> None:
    """Show this machine's CPU, memory, GPUs (free VRAM), disk, the llama.cpp build and build tools."""
    from rich.table import Table
    from rich.text import Text

    from nemolaunch.adapters.llamacpp import binary_version, find_binary, list_devices
    from nemolaunch.cli.planning import hardware_facts_and_driver
    from nemolaunch.core.download_plan import human_bytes
    from nemolaunch.core.speed import gpu_bandwidth, ram_bandwidth
    from nemolaunch.errors import NemolaunchError

    # This machine's RAM bandwidth and disk read speed are measured (about a second in all): the speed
    # forecast reads them.
    facts, driver = hardware_facts_and_driver(hardware, measure_bandwidth=True, measure_disk=True)
    if json_output:
        print(facts.to_json())
        return
    title = f"nemolaunch {__version__}" + (
        f" — machine facts from {hardware}; build tools and llama.cpp of this machine" if hardware else ""
    )
    table = Table(title=title)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("found", overflow="fold")  # a path must stay whole enough to copy
    table.add_row("system", f"{facts.os} {facts.arch}")
    cpu = facts.cpu
    simd = ", ".join(flag for flag in cpu.flags if flag.startswith(("avx", "amx", "neon", "sve"))) or "none listed"
    table.add_row(
        "cpu", f"{cpu.model or 'unknown'}: {cpu.physical_cores} physical / {cpu.logical_cores} logical cores; {simd}"
    )
    memory = facts.memory
    table.add_row("memory", f"{human_bytes(memory.total_bytes)} total, {human_bytes(memory.available_bytes)} available")
    ram = ram_bandwidth(facts)
    how = "measured, every core reading" if ram.source == "measured" else "estimated from the core count"
    table.add_row("memory bandwidth", f"{_rate(ram.bytes_per_s)} ({how})")
    if facts.disk is not None:
        table.add_row("disk", f"{human_bytes(facts.disk.free_bytes)} free at {facts.disk.path}")
        table.add_row("disk reads", _disk_reads(facts.disk.read_bytes_per_s, facts.disk.random_read_bytes_per_s))
    if not facts.gpus:
        table.add_row("gpu", "none (CPU only)")
    for gpu in facts.gpus:
        detail = f"{gpu.name}: {human_bytes(gpu.free_bytes)} free of {human_bytes(gpu.total_bytes)}"
        if gpu.compute_capability:
            detail += f", compute {gpu.compute_capability}"
        if gpu.unified:
            detail += ", unified memory (counted once)"
        bandwidth = gpu_bandwidth(gpu, cpu.model)
        if bandwidth.bytes_per_s:
            detail += f", {_rate(bandwidth.bytes_per_s)} ({'NVML' if bandwidth.source == 'nvml' else 'by name'})"
        table.add_row(f"gpu {gpu.index} ({gpu.backend})", detail)
    if driver:
        table.add_row("nvidia driver", driver)
    try:
        found = find_binary("llama-server", explicit_dir=llama_cpp)
        version = binary_version(found.path)
        table.add_row(
            "llama.cpp",
            f"{found.path} (from {found.origin}; {version.label()}; backend {found.backend or 'unknown'})",
        )
        # What the build itself can use: a CUDA build on a machine whose driver fails lists nothing.
        devices = list_devices(found.path)
        if devices is not None:
            table.add_row("llama.cpp devices", ", ".join(devices) if devices else "CPU only")
    except NemolaunchError as exc:
        table.add_row("llama.cpp", Text(str(exc), style="red"))
    for tool in BUILD_TOOLS:
        table.add_row(tool, shutil.which(tool) or Text("not found", style="yellow"))
    console.print(table)


def _disk_reads(sequential: float | None, spread: float | None) -> str:
    if not sequential or not spread:
        return "not measured (a disk-backed forecast assumes a typical NVMe SSD)"
    return f"{_rate(sequential)} sequential, {_rate(spread)} in random 1-4 MiB reads (past the page cache)"


def _rate(bytes_per_s: float | None) -> str:
    if not bytes_per_s:
        return "unknown"
    if bytes_per_s >= 1e12:
        return f"{bytes_per_s / 1e12:.2f} TB/s"
    return f"{bytes_per_s / 1e9:.0f} GB/s" if bytes_per_s >= 10e9 else f"{bytes_per_s / 1e9:.2f} GB/s"

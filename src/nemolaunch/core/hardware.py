"""Hardware facts: the one description of a machine that planning reads.

The probe (``nemolaunch.adapters.hardware_probe``) fills this in for the machine
it runs on; ``--hardware FILE`` loads the same shape from JSON, so a plan can be
made for a machine that is not this one, and tests drive the planner from
recorded machines. Sizes are bytes. Unknown keys are rejected so a typo in a
hand-edited file is an error rather than a silently ignored value.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nemolaunch.errors import HardwareFileInvalid, HardwareFileNotJson

GpuBackend = Literal["cuda", "metal"]


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuFacts(_Facts):
    model: str | None = None
    physical_cores: int | None = Field(default=None, ge=1)
    logical_cores: int | None = Field(default=None, ge=1)
    flags: list[str] = Field(default_factory=list)


class MemoryFacts(_Facts):
    total_bytes: int = Field(ge=0)
    available_bytes: int = Field(ge=0)
    # Read bandwidth with every core, as `nemolaunch doctor` measures it; absent: estimated from the CPU.
    bandwidth_bytes_per_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _available_within_total(self) -> MemoryFacts:
        if self.available_bytes > self.total_bytes:
            raise ValueError("available_bytes is larger than total_bytes")
        return self


class DiskFacts(_Facts):
    path: str  # where models are stored (the HF hub cache unless told otherwise)
    free_bytes: int = Field(ge=0)
    # Read speeds past the page cache, as `nemolaunch doctor` measures them on a scratch file there:
    # large sequential reads, and random reads of 1-4 MiB (the size of one expert's slice of a tensor).
    # Absent (older files, or not measured): a disk-backed forecast assumes a typical NVMe SSD.
    read_bytes_per_s: float | None = Field(default=None, gt=0)
    random_read_bytes_per_s: float | None = Field(default=None, gt=0)
    # The block device's read-ahead (Linux: /sys/block/DEV/queue/read_ahead_kb): a page fault in a mapped
    # file reads this much around the faulting page, however little of it was wanted.
    read_ahead_bytes: int | None = Field(default=None, ge=0)
    # What page faults in a mapped file bring in per second (random 1 MiB slices, a few threads at once).
    fault_read_bytes_per_s: float | None = Field(default=None, gt=0)


class GpuFacts(_Facts):
    backend: GpuBackend
    # NVML's index (the order nvidia-smi shows), not the CUDA ordinal, which
    # CUDA_VISIBLE_DEVICES renumbers; 0 for the one Metal device.
    index: int = Field(ge=0)
    name: str
    total_bytes: int = Field(ge=0)
    # What this process could still allocate: memory another process holds is
    # already subtracted. For Metal it is the working-set budget, capped by the
    # RAM that is available.
    free_bytes: int = Field(ge=0)
    compute_capability: str | None = None
    # True when the GPU's memory is the system RAM (Apple silicon, GB10-class
    # boards): it must not be counted twice, as RAM and as VRAM.
    unified: bool = False
    # Peak memory bandwidth from NVML (bus width × memory clock); absent: a table by name.
    memory_bandwidth_bytes_per_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _free_within_total(self) -> GpuFacts:
        if self.free_bytes > self.total_bytes:
            raise ValueError("free_bytes is larger than total_bytes")
        return self


class HardwareFacts(_Facts):
    os: str  # platform.system().lower(): "linux", "darwin", "windows"
    arch: str  # platform.machine().lower(): "x86_64", "arm64", "aarch64"
    cpu: CpuFacts
    memory: MemoryFacts
    disk: DiskFacts | None = None
    gpus: list[GpuFacts] = Field(default_factory=list)

    def to_json(self) -> str:
        """The JSON the probe prints and ``--hardware`` reads back; absent values are null."""
        return self.model_dump_json(indent=2)


def parse_hardware_facts(text: str, *, source: str) -> HardwareFacts:
    """Hardware facts from JSON text; ``source`` names the text in errors (the file's path)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HardwareFileNotJson(path=source, detail=f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    try:
        return HardwareFacts.model_validate(data)
    except ValidationError as exc:
        field, problem = first_validation_problem(exc)
        raise HardwareFileInvalid(path=source, field=field, problem=problem) from exc


def first_validation_problem(exc: ValidationError) -> tuple[str, str]:
    """The first failing field as a dotted path (``gpus[0].free_bytes``) and pydantic's words for it."""
    error = exc.errors()[0]
    parts: list[str] = []
    for part in error["loc"]:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    field = "".join(parts) or "(top level)"
    problem = error["msg"]
    if error["type"] == "extra_forbidden":
        problem = "unknown key"
    return field, problem


#: Apple's default GPU working-set limit (what Metal reports as
#: recommendedMaxWorkingSetSize) is about 2/3 of RAM on Macs with up to 36 GB
#: and about 3/4 above that. Setting the ``iogpu.wired_limit_mb`` sysctl to a
#: positive value replaces the default with that many MiB.
METAL_SMALL_MAC_RAM_BYTES = 36 * 1024**3
METAL_SMALL_MAC_SHARE = (2, 3)
METAL_LARGE_MAC_SHARE = (3, 4)


def metal_working_set_bytes(ram_total_bytes: int, wired_limit_mb: int | None) -> int:
    """The memory the Apple GPU may use: the wired limit when set, else Apple's default share of RAM."""
    if wired_limit_mb is not None and wired_limit_mb > 0:
        return min(wired_limit_mb * 1024**2, ram_total_bytes)
    numerator, denominator = (
        METAL_SMALL_MAC_SHARE if ram_total_bytes <= METAL_SMALL_MAC_RAM_BYTES else METAL_LARGE_MAC_SHARE
    )
    return ram_total_bytes * numerator // denominator

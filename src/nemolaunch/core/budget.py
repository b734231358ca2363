"""The memory a model may use: this machine's GPUs and RAM, and what its RPC workers lend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    # Types only: a budget without workers (every single-machine launch) needs none of the cluster code.
    from nemolaunch.core.cluster import Worker
    from nemolaunch.core.hardware import HardwareFacts

Placement = Literal["gpu", "gpu+cpu-experts", "cpu", "metal", "cluster", "gpu+ram+disk", "ram+disk", "metal+disk"]
#: Placements where the experts that fit nowhere in memory are paged from disk (``--allow-disk``).
DISK_PLACEMENTS: tuple[Placement, ...] = ("gpu+ram+disk", "ram+disk", "metal+disk")

BudgetKind = Literal["cuda", "metal", "cpu"]


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a model may use on this machine."""

    kind: BudgetKind
    gpu_bytes: int  # free memory of discrete CUDA GPUs, or the Metal / unified GPU budget
    ram_bytes: int  # RAM available on top of it; 0 where GPU memory is the RAM
    gpu_devices: int
    cuda_devices: int
    workers: tuple[Worker, ...] = ()  # llama.cpp RPC workers; loopback ones add no memory

    @property
    def remote_workers(self) -> tuple[Worker, ...]:
        return tuple(worker for worker in self.workers if not worker.on_this_machine)

    @property
    def worker_bytes(self) -> int:
        return sum(worker.usable_bytes for worker in self.remote_workers)

    @property
    def head_bytes(self) -> int:
        return self.gpu_bytes + self.ram_bytes

    @property
    def total_bytes(self) -> int:
        return self.head_bytes + self.worker_bytes

    @property
    def rpc_devices(self) -> int:
        return sum(len(worker.devices) for worker in self.workers)

    def placement_for(self, forecast_bytes: int) -> Placement:
        if self.remote_workers:
            return "cluster"
        if self.kind == "metal":
            return "metal"
        if self.kind == "cpu":
            return "cpu"
        return "gpu" if forecast_bytes <= self.gpu_bytes else "gpu+cpu-experts"


def memory_budget(facts: HardwareFacts, workers: tuple[Worker, ...] = ()) -> MemoryBudget:
    """GPU free memory + RAM available on CUDA machines; the Metal budget on Apple; RAM otherwise;
    plus what each RPC worker on another machine lets llama.cpp fill.

    Unified memory (Apple silicon, CUDA boards whose GPU uses the system RAM) is
    counted once, as GPU memory, never again as RAM.
    """
    head = head_budget(facts)
    return MemoryBudget(head.kind, head.gpu_bytes, head.ram_bytes, head.gpu_devices, head.cuda_devices, workers)


def head_budget(facts: HardwareFacts) -> MemoryBudget:
    metal = [gpu for gpu in facts.gpus if gpu.backend == "metal"]
    if metal:
        return MemoryBudget("metal", max(gpu.free_bytes for gpu in metal), 0, 1, 0)
    cuda = [gpu for gpu in facts.gpus if gpu.backend == "cuda"]
    if not cuda:
        return MemoryBudget("cpu", 0, facts.memory.available_bytes, 0, 0)
    discrete = [gpu for gpu in cuda if not gpu.unified]
    if not discrete:
        # Every GPU shares the one pool of system memory.
        pool = min(max(gpu.free_bytes for gpu in cuda), facts.memory.available_bytes)
        return MemoryBudget("cuda", pool, 0, len(cuda), len(cuda))
    return MemoryBudget(
        "cuda",
        sum(gpu.free_bytes for gpu in discrete),
        facts.memory.available_bytes,
        len(cuda),
        len(cuda),
    )

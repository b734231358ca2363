"""The plan's words: why this budget, this quant, this placement, and what to watch for."""

from __future__ import annotations

from nemolaunch.core.assessment import QUALITY_CEILING_BPW, QuantAssessment, gb
from nemolaunch.core.budget import MemoryBudget
from nemolaunch.core.catalog import Catalog
from nemolaunch.core.cluster import HostShare
from nemolaunch.core.disk_paging import disk_reads
from nemolaunch.core.hardware import HardwareFacts
from nemolaunch.core.speed import GPU_EFFICIENCY, RPC_TOKEN_OVERHEAD_S, Sparsity, gpu_bandwidth, ram_bandwidth


def speed_assumptions(
    facts: HardwareFacts, budget: MemoryBudget, sparsity: Sparsity, *, disk: bool = False
) -> tuple[str, ...]:
    """What the speed forecast assumed, in words: every figure it rests on, and where it came from."""
    words = [
        f"each token reads {sparsity.active_share:.1%} of the weights (from the {sparsity.source}); routed "
        f"experts are {sparsity.expert_share:.0%} of them and spill to RAM first"
    ]
    ram = ram_bandwidth(facts)
    if ram.bytes_per_s:
        words.append(f"RAM reads {ram.bytes_per_s / 1e9:.0f} GB/s ({ram.source})")
    for gpu in facts.gpus:
        bandwidth = gpu_bandwidth(gpu, facts.cpu.model)
        rate = f"{bandwidth.bytes_per_s / 1e9:.0f} GB/s" if bandwidth.bytes_per_s else "an unknown bandwidth"
        words.append(f"{gpu.name} reads {rate} ({bandwidth.source}), at {GPU_EFFICIENCY:.0%} of it")
    if budget.remote_workers:
        words.append(
            f"each RPC worker adds {RPC_TOKEN_OVERHEAD_S * 1e3:.1f} ms per token (loopback; a LAN adds its "
            "round trip); a worker whose bandwidth is unknown is taken as fast as this machine's RAM"
        )
    if disk:
        words.append(disk_assumption(facts))
    words.append("prompt speed is rough: 2 FLOPs per active parameter at a share of the chips' peak")
    return tuple(words)


def disk_assumption(facts: HardwareFacts) -> str:
    reads = disk_reads(facts)
    source = (
        "measured"
        if reads.random.source == "measured"
        else "assumed, a typical NVMe SSD: `nemolaunch doctor --json` measures it"
    )
    return (
        f"the disk reads {(reads.random.bytes_per_s or 0) / 1e9:.2f} GB/s in 1-4 MiB random reads and "
        f"{(reads.sequential.bytes_per_s or 0) / 1e9:.2f} GB/s sequentially ({source}); with routing taken as "
        "uniform, an expert is in the page cache with a chance equal to the cached share, so a token reads its "
        "routed share of what is on disk (approximate: real routing favours some experts, which then stay cached)"
    )


def hosts_reason(name: str, hosts: tuple[HostShare, ...]) -> str:
    parts = [f"{host.host} {gb(host.planned_bytes)} of {gb(host.free_bytes)}" for host in hosts]
    return f"{name} spreads over {len(hosts)} machines (approximate: llama.cpp splits by whole layers): " + ", ".join(
        parts
    )


def cluster_warnings(budget: MemoryBudget) -> list[str]:
    warnings = []
    local = [str(worker.endpoint) for worker in budget.workers if worker.on_this_machine]
    if local:
        warnings.append(
            f"RPC worker(s) {', '.join(local)} run on this machine: their memory is this machine's own, counted once"
        )
    for worker in budget.remote_workers:
        for device in worker.devices:
            if device.unmeasured:
                warnings.append(
                    f"{worker.endpoint} ({device.name}) reports all {gb(device.total_bytes)} as free, as llama.cpp "
                    f"does for a CPU: the plan leaves {gb(device.fit_target_bytes)} of it to that machine "
                    "(passed to llama.cpp as --fit-target)"
                )
    return warnings


def why_not_better(chosen: QuantAssessment, assessments: tuple[QuantAssessment, ...]) -> list[str]:
    chosen_bits = chosen.quant.bits_per_weight or 0.0
    better = [item for item in assessments if (item.quant.bits_per_weight or 0.0) > chosen_bits]
    if not better:
        return []
    nearest = min(better, key=lambda item: item.forecast.total)
    if not nearest.fits:
        return [
            f"the next better quant, {nearest.quant.name}, needs {gb(nearest.forecast.total)}, more than the budget"
        ]
    # It fits but ranked lower: only the quality ceiling does that.
    return [
        f"{nearest.quant.name} would fit only with experts in RAM; past {QUALITY_CEILING_BPW} bits per "
        "weight quality no longer improves, so the quant that stays in GPU memory wins"
    ]


def budget_reason(budget: MemoryBudget, facts: HardwareFacts) -> str:
    head = _head_budget_reason(budget, facts)
    if not budget.remote_workers:
        return head
    workers = ", ".join(f"{worker.endpoint} {gb(worker.usable_bytes)}" for worker in budget.remote_workers)
    return f"{head}; + {len(budget.remote_workers)} RPC worker(s): {workers} = {gb(budget.total_bytes)} in all"


def _head_budget_reason(budget: MemoryBudget, facts: HardwareFacts) -> str:
    if budget.kind == "metal":
        return f"budget: {gb(budget.gpu_bytes)}, the Apple GPU's working-set limit (unified memory, counted once)"
    if budget.kind == "cpu":
        return f"budget: {gb(budget.ram_bytes)} of RAM available (no GPU: llama.cpp runs on the CPU)"
    gpus = [gpu for gpu in facts.gpus if gpu.backend == "cuda"]
    if budget.ram_bytes == 0:
        return f"budget: {gb(budget.gpu_bytes)} of unified memory shared by {len(gpus)} CUDA GPU(s)"
    return (
        f"budget: {len(gpus)} CUDA GPU(s) with {gb(budget.gpu_bytes)} free "
        f"+ {gb(budget.ram_bytes)} of RAM available = {gb(budget.head_bytes)}"
    )


def forecast_reason(item: QuantAssessment, ctx_size: int) -> str:
    f = item.forecast
    return (
        f"{item.quant.name} needs {gb(f.total)} at {ctx_size} tokens of context: weights {gb(f.weights)}, "
        f"KV cache {gb(f.kv)}, Mamba state {gb(f.recurrent)}, compute buffers {gb(f.compute)}, "
        f"llama-server itself {f.runtime / 1e6:.0f} MB, safety margin {gb(f.margin)}"
    )


def placement_reason(item: QuantAssessment, budget: MemoryBudget) -> str:
    if item.paged and item.disk is not None:
        where = {"gpu+ram+disk": "the GPUs and RAM", "ram+disk": "RAM", "metal+disk": "unified memory"}[item.placement]
        return (
            f"placement {item.placement}: {gb(item.disk.memory_weight_bytes)} of the weights live in {where}, "
            f"{gb(item.disk.disk_bytes)} of experts only on disk: llama.cpp maps the file and reads them when a token "
            f"routes to them (~{gb(item.disk.read_per_token * 100)} read from disk per 100 tokens); launched mapped "
            "from the file, so never with --mlock or --no-mmap"
        )
    if item.placement == "gpu":
        return "placement gpu: everything fits in GPU memory"
    if item.placement == "gpu+cpu-experts":
        return (
            f"placement gpu+cpu-experts: {gb(budget.gpu_bytes)} of GPU memory is not enough alone; "
            "llama.cpp's --fit fills the GPUs and keeps the remaining MoE experts in RAM"
        )
    if item.placement == "metal":
        return "placement metal: the whole model runs on the Apple GPU"
    if item.placement == "cluster":
        gpus = ", then on this machine's GPUs" if budget.kind == "cuda" else ""
        return (
            "placement cluster: llama.cpp puts layers on the RPC workers first, in proportion to their free memory "
            f"(--fit reads each worker's memory over RPC){gpus}, the rest in this machine's "
            f"{'memory' if budget.kind == 'metal' else 'RAM'}; this machine keeps the token embeddings and samples"
        )
    return "placement cpu: the whole model runs on the CPU, from RAM"


def disk_warnings(chosen: QuantAssessment | None, facts: HardwareFacts, catalog: Catalog) -> list[str]:
    # A cache listing means the files are already on disk.
    if chosen is None or facts.disk is None or catalog.source == "cache":
        return []
    if chosen.quant.size_bytes <= facts.disk.free_bytes:
        return []
    return [
        f"{chosen.quant.name} is {gb(chosen.quant.size_bytes)} but only {gb(facts.disk.free_bytes)} "
        f"is free at {facts.disk.path} (files already downloaded there need no more room)"
    ]

"""`--rpc HOST:PORT,...` for serve, run, plan and download: the live workers a launch spreads over.

The addresses are read first, with the other option checks; the workers are asked what they have
(with this machine's own llama-server) before any planning or download, so a dead worker is one
line before hours of downloading, never llama.cpp's backtrace after them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.output import note

if TYPE_CHECKING:
    from nemolaunch.core.cluster import RpcEndpoint, Worker
    from nemolaunch.core.launch import Cluster

RpcOption = Annotated[
    str | None,
    typer.Option(
        "--rpc",
        help="llama.cpp RPC workers, HOST:PORT,... (each started with `nemolaunch rpc-worker`): the plan counts "
        "their memory and llama.cpp spreads the model over them.",
    ),
]


def read_endpoints(rpc: str | None) -> tuple[RpcEndpoint, ...]:
    """The workers ``--rpc`` names, checked for form only (no network)."""
    if rpc is None:
        return ()
    from nemolaunch.core.cluster import parse_endpoints

    return parse_endpoints(rpc)


def ask_workers(endpoints: tuple[RpcEndpoint, ...], *, server: Path) -> tuple[Worker, ...]:
    """Each worker's devices and free memory, read with ``server`` (the llama-server that will run)."""
    if not endpoints:
        return ()
    from nemolaunch.adapters.rpc_probe import probe_workers
    from nemolaunch.core.download_plan import human_bytes

    workers = probe_workers(server, endpoints)
    for worker in workers:
        devices = ", ".join(
            f"{device.name} {human_bytes(device.free_bytes)} free of {human_bytes(device.total_bytes)}"
            for device in worker.devices
        )
        note(f"RPC worker {worker.endpoint}: {devices}")
    return workers


def workers_for_plan(endpoints: tuple[RpcEndpoint, ...], *, llama_cpp: Path | None = None) -> tuple[Worker, ...]:
    """For plan and download: the workers, asked with the llama-server this machine would run."""
    if not endpoints:
        return ()
    from nemolaunch.adapters.llamacpp import find_binary

    return ask_workers(endpoints, server=find_binary("llama-server", explicit_dir=llama_cpp).path)


def workers_for_launch(
    rpc: str | None, endpoints: tuple[RpcEndpoint, ...], *, server: Path, hardware: Path | None
) -> tuple[Worker, ...]:
    """The live workers of a serve or run: a cluster file cannot stand in for them."""
    if hardware is not None and rpc is None:
        from nemolaunch.adapters.hardware_file import load_machine
        from nemolaunch.errors import ClusterNeedsLiveWorkers

        _, recorded = load_machine(hardware)
        if recorded:
            raise ClusterNeedsLiveWorkers(path=str(hardware), workers=[str(worker.endpoint) for worker in recorded])
    return ask_workers(endpoints, server=server)


def launch_cluster(workers: tuple[Worker, ...]) -> Cluster | None:
    """What llama.cpp is told about the workers: ``--rpc``, and ``--fit-target`` where a worker needs it."""
    if not workers:
        return None
    from nemolaunch.core.cluster import fit_targets_mib
    from nemolaunch.core.launch import Cluster

    return Cluster(
        endpoints=tuple(str(worker.endpoint) for worker in workers),
        fit_target_mib=tuple(fit_targets_mib(workers) or ()),
    )

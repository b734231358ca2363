"""Several machines as one: llama.cpp RPC workers, what each brings, and how a model spreads over them.

A worker is a machine running llama.cpp's ``rpc-server`` (``nemolaunch rpc-worker``); the head runs
``llama-server --rpc HOST:PORT,...``. What a worker brings is what its rpc-server exposes: its GPUs,
or its CPU (the RAM) when it has none, as rpc-server chooses by default. Workers reach the planner
from two places with one shape: live, read with the head's own ``llama-server --list-devices``
(``nemolaunch.adapters.rpc_probe``), or recorded, from a cluster file (``ClusterFile``) for a
cluster one does not have yet.

How llama.cpp places the model (llama.cpp 0c1e570, read in src/llama.cpp and common/fit.cpp): RPC
devices come first in the device list and count as GPUs; layers go to GPU devices in proportion to
their free memory, and ``--fit`` (on by default) reads every device's free memory, RPC devices
included (over RPC), and keeps ``FIT_TARGET_BYTES`` free on each; what does not fit stays in the
head's RAM. So nemolaunch passes no ``--tensor-split``: ``--fit`` already splits by free memory.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nemolaunch.core.forecast import RPC_SERVER_RUNTIME_BYTES
from nemolaunch.core.hardware import HardwareFacts, first_validation_problem, parse_hardware_facts
from nemolaunch.core.launch import DEFAULT_RPC_PORT
from nemolaunch.core.speed import cpu_flops, gpu_bandwidth, gpu_flops, ram_bandwidth
from nemolaunch.errors import BadRpcEndpoint, HardwareFileInvalid, HardwareFileNotJson

#: llama.cpp's --fit leaves this much free on every device it fills (its --fit-target default, 1024 MiB).
FIT_TARGET_BYTES = 1024**3
#: A worker whose rpc-server exposes its CPU keeps this share of its RAM (at least the minimum) for its
#: own system: llama.cpp's CPU backend reports the whole RAM as free (ggml-cpu.cpp: "assume that all of
#: it is free"), so without it --fit would fill the worker to the last byte.
CPU_WORKER_RESERVE_FRACTION = 0.10
CPU_WORKER_RESERVE_MIN_BYTES = 4 * 1024**3

DeviceKind = Literal["gpu", "cpu", "unknown"]


@dataclass(frozen=True)
class RpcEndpoint:
    """Where one rpc-server listens."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_endpoint(text: str) -> RpcEndpoint:
    """``HOST:PORT`` as llama.cpp's ``--rpc`` takes it; a bare host gets rpc-server's default port.

    llama.cpp splits an endpoint at its first ':', so an IPv6 literal cannot name a worker.
    """
    word = text.strip()
    if not word:
        raise BadRpcEndpoint(endpoint=text, reason="it is empty")
    if word.count(":") > 1 or word.startswith("["):
        raise BadRpcEndpoint(
            endpoint=text, reason="llama.cpp's RPC cannot take an IPv6 address; use an IPv4 address or a host name"
        )
    host, colon, port_text = word.partition(":")
    if not host:
        raise BadRpcEndpoint(endpoint=text, reason="the host is missing")
    if any(char.isspace() or char in "/@?#" for char in host):
        raise BadRpcEndpoint(endpoint=text, reason=f"{host!r} is not a host name or address")
    if not port_text:
        if colon:
            raise BadRpcEndpoint(endpoint=text, reason="the port after ':' is missing")
        return RpcEndpoint(host, DEFAULT_RPC_PORT)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise BadRpcEndpoint(endpoint=text, reason=f"{port_text!r} is not a port from 1 to 65535")
    return RpcEndpoint(host, int(port_text))


def parse_endpoints(text: str) -> tuple[RpcEndpoint, ...]:
    """A comma-separated list of workers, each named once."""
    endpoints = tuple(parse_endpoint(word) for word in text.split(","))
    seen: set[RpcEndpoint] = set()
    for endpoint in endpoints:
        if endpoint in seen:
            raise BadRpcEndpoint(endpoint=str(endpoint), reason="it is named twice")
        seen.add(endpoint)
    return endpoints


@dataclass(frozen=True)
class WorkerDevice:
    """One device a worker's rpc-server exposes (``RPC0`` on the head), with the memory it reports."""

    name: str
    total_bytes: int
    free_bytes: int
    kind: DeviceKind = "unknown"
    # What the machine's own system needs beside it, where known (a cluster file says how much RAM is
    # available); None: the reserve rule below.
    reserve_bytes: int | None = None
    # For the speed forecast, where known (a cluster file names the machine): memory bandwidth, FLOP/s.
    bandwidth_bytes_per_s: float | None = None
    flops: float | None = None

    @property
    def unmeasured(self) -> bool:
        """Free memory that is really the total: llama.cpp's CPU backend (and an idle Apple GPU) report
        all of it free, so nothing is left for the worker's own system unless we keep it."""
        return self.kind == "cpu" or (self.kind == "unknown" and self.free_bytes == self.total_bytes)

    @property
    def fit_target_bytes(self) -> int:
        """What --fit should leave free on this device: its default, or a system reserve for unmeasured RAM."""
        if self.unmeasured:
            reserve = round(self.total_bytes * CPU_WORKER_RESERVE_FRACTION)
            return max(FIT_TARGET_BYTES, CPU_WORKER_RESERVE_MIN_BYTES, reserve, self.reserve_bytes or 0)
        return FIT_TARGET_BYTES

    @property
    def usable_bytes(self) -> int:
        return max(self.free_bytes - self.fit_target_bytes, 0)


@dataclass(frozen=True)
class Worker:
    endpoint: RpcEndpoint
    devices: tuple[WorkerDevice, ...]
    # The link from the head, where known (a cluster file names it); None: the load forecast assumes one.
    link_bytes_per_s: float | None = None

    @property
    def free_bytes(self) -> int:
        return sum(device.free_bytes for device in self.devices)

    @property
    def usable_bytes(self) -> int:
        """What llama.cpp may fill on this worker: each device's free memory less what --fit leaves."""
        return sum(device.usable_bytes for device in self.devices)

    @property
    def on_this_machine(self) -> bool:
        """A loopback worker is this machine: its memory is the head's own, and counts once."""
        return self.endpoint.is_loopback


def fit_targets_mib(workers: tuple[Worker, ...]) -> list[int] | None:
    """``--fit-target`` for the RPC devices (first in llama.cpp's device order), or None when --fit's
    default already holds for all of them."""
    devices = [device for worker in workers for device in worker.devices]
    if all(device.fit_target_bytes == FIT_TARGET_BYTES for device in devices):
        return None
    targets = [device.fit_target_bytes // 1024**2 for device in devices]
    if len(targets) == 1:
        # One value would be broadcast to every device, this machine's GPUs too.
        targets.append(FIT_TARGET_BYTES // 1024**2)
    return targets


# --- cluster files -------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterWorkerEntry(_Strict):
    endpoint: str
    facts: HardwareFacts
    # rpc-server's --device list, as `nemolaunch rpc-worker --device` takes it (CUDA0, CPU, ...);
    # absent: what rpc-server exposes by default, the GPUs, else the CPU.
    devices: list[str] | None = None
    # The link from the head to it, for the load forecast: bytes/s, or Gb/s (one of them).
    link_bytes_per_s: float | None = Field(default=None, gt=0)
    link_gbit_per_s: float | None = Field(default=None, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        try:
            parse_endpoint(value)
        except BadRpcEndpoint as exc:
            raise ValueError(exc.reason) from None
        return value


class ClusterFile(_Strict):
    """``{"head": <facts>, "workers": [{"endpoint": "10.0.0.2:50052", "facts": <facts>}, ...]}``.

    Each ``facts`` is what ``nemolaunch doctor --json`` prints on that machine.
    """

    head: HardwareFacts
    workers: list[ClusterWorkerEntry] = Field(min_length=1)

    @field_validator("workers")
    @classmethod
    def _distinct(cls, value: list[ClusterWorkerEntry]) -> list[ClusterWorkerEntry]:
        endpoints = [str(parse_endpoint(entry.endpoint)) for entry in value]
        for endpoint in endpoints:
            if endpoints.count(endpoint) > 1:
                raise ValueError(f"{endpoint} is named twice")
        return value

    def to_workers(self) -> tuple[Worker, ...]:
        workers = []
        for number, entry in enumerate(self.workers):
            if entry.link_bytes_per_s is not None and entry.link_gbit_per_s is not None:
                raise ValueError(
                    f"workers[{number}].link_gbit_per_s: name link_bytes_per_s or link_gbit_per_s, not both"
                )
            link = entry.link_bytes_per_s or (entry.link_gbit_per_s * 1e9 / 8 if entry.link_gbit_per_s else None)
            try:
                worker = worker_like(entry.facts, parse_endpoint(entry.endpoint), devices=entry.devices)
            except ValueError as exc:
                raise ValueError(f"workers[{number}].devices: {exc}") from None
            workers.append(replace(worker, link_bytes_per_s=link))
        return tuple(workers)


def parse_machine_file(text: str, *, source: str) -> tuple[HardwareFacts, tuple[Worker, ...]]:
    """A ``--hardware`` file: one machine's facts, or a cluster (``{"head": ..., "workers": [...]}``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HardwareFileNotJson(path=source, detail=f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not (isinstance(data, dict) and ("head" in data or "workers" in data)):
        return parse_hardware_facts(text, source=source), ()
    try:
        cluster = ClusterFile.model_validate(data)
        return cluster.head, cluster.to_workers()
    except ValidationError as exc:
        field, problem = first_validation_problem(exc)
        raise HardwareFileInvalid(path=source, field=field, problem=problem) from exc
    except ValueError as exc:  # a worker's --device list names a device its machine lacks
        field, _, problem = str(exc).partition(": ")
        raise HardwareFileInvalid(path=source, field=field, problem=problem) from exc


def worker_like(facts: HardwareFacts, endpoint: RpcEndpoint, *, devices: list[str] | None = None) -> Worker:
    """The worker a machine with these facts makes: the devices its rpc-server would expose.

    rpc-server exposes every GPU, or the CPU when there is none; ``devices`` names them as its
    ``--device`` does (``CUDA0``, ``MTL0``, ``CPU``). Unknown names raise ValueError.
    """
    gpus = {f"{'MTL' if gpu.backend == 'metal' else 'CUDA'}{number}": gpu for number, gpu in enumerate(facts.gpus)}
    # As llama.cpp will report it: the whole RAM free; what the machine uses already stays reserved.
    memory = facts.memory
    in_use = memory.total_bytes - memory.available_bytes
    ram = WorkerDevice(
        "CPU",
        memory.total_bytes,
        memory.total_bytes,
        "cpu",
        reserve_bytes=in_use,
        bandwidth_bytes_per_s=ram_bandwidth(facts).bytes_per_s,
        flops=cpu_flops(facts),
    )
    if devices is None:
        names = list(gpus) or ["CPU"]
    else:
        names = [name.strip() for name in devices]
        for name in names:
            if name != "CPU" and name not in gpus:
                raise ValueError(f"device {name!r} is not on that machine (it has {', '.join([*gpus, 'CPU'])})")
    chosen = []
    for name in names:
        if name == "CPU":
            chosen.append(ram)
        else:
            gpu = gpus[name]
            bandwidth = gpu_bandwidth(gpu, facts.cpu.model).bytes_per_s
            flops = gpu_flops(gpu, facts.cpu.model)
            chosen.append(WorkerDevice(name, gpu.total_bytes, gpu.free_bytes, "gpu", None, bandwidth, flops))
    return Worker(endpoint, tuple(chosen))


# --- how a forecast spreads over the cluster ----------------------------------------------------------


@dataclass(frozen=True)
class HostShare:
    """One machine's part of a launch: what it has, and what the forecast puts there."""

    host: str  # "this machine", or the worker's endpoint
    devices: tuple[str, ...]
    free_bytes: int
    planned_bytes: int
    weights_bytes: int  # of planned_bytes, the model's tensors

    @property
    def fits(self) -> bool:
        return self.planned_bytes <= self.free_bytes

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "devices": list(self.devices),
            "free_bytes": self.free_bytes,
            "planned_bytes": self.planned_bytes,
            "weights_bytes": self.weights_bytes,
            "fits": self.fits,
        }


def spread(
    *,
    layer_bytes: int,
    weights_bytes: int,
    head_fixed_bytes: int,
    head_gpu_bytes: int,
    head_ram_bytes: int,
    head_devices: tuple[str, ...],
    workers: tuple[Worker, ...],
    per_device_bytes: int,
) -> tuple[HostShare, ...]:
    """Where a launch's memory goes, as llama.cpp places it (module docstring); figures are approximate.

    ``layer_bytes`` (weights + KV cache + Mamba state: what moves with the layers) goes to the GPU-type
    devices (every worker device, this machine's GPUs) in proportion to their free memory, each capped
    at its free memory less --fit's target and ``per_device_bytes`` (its compute buffer); the rest stays
    in this machine's RAM beside ``head_fixed_bytes`` (llama-server itself, the CPU's compute buffer,
    the safety margin). Workers on this machine (loopback) add no memory and get no share of their own.
    """
    remote = [worker for worker in workers if not worker.on_this_machine]
    # Each GPU-type device: (owner, free, capacity).
    slots: list[tuple[int, int, int]] = []
    for owner, worker in enumerate(remote):
        for device in worker.devices:
            capacity = max(device.usable_bytes - per_device_bytes - RPC_SERVER_RUNTIME_BYTES, 0)
            slots.append((owner, device.free_bytes, capacity))
    head = len(remote)
    if head_gpu_bytes > 0:
        slots.append((head, head_gpu_bytes, max(head_gpu_bytes - per_device_bytes * max(len(head_devices), 1), 0)))
    placed = _proportional(layer_bytes, [(free, capacity) for _, free, capacity in slots])
    per_host = [0] * (head + 1)
    for (owner, _, _), amount in zip(slots, placed, strict=True):
        per_host[owner] += amount
    overflow = layer_bytes - sum(placed)
    weight_share = (lambda amount: round(amount * weights_bytes / layer_bytes)) if layer_bytes else (lambda _: 0)
    shares = [
        HostShare(
            host=str(worker.endpoint),
            devices=tuple(device.name for device in worker.devices),
            free_bytes=worker.free_bytes,
            planned_bytes=per_host[owner]
            + (len(worker.devices) * per_device_bytes + RPC_SERVER_RUNTIME_BYTES if per_host[owner] else 0),
            weights_bytes=weight_share(per_host[owner]),
        )
        for owner, worker in enumerate(remote)
    ]
    shares.insert(
        0,
        HostShare(
            host="this machine",
            devices=head_devices,
            free_bytes=head_gpu_bytes + head_ram_bytes,
            planned_bytes=per_host[head] + overflow + head_fixed_bytes,
            weights_bytes=weight_share(per_host[head] + overflow),
        ),
    )
    return tuple(shares)


def _proportional(total: int, slots: list[tuple[int, int]]) -> list[int]:
    """``total`` over slots of (weight, cap): in proportion to weight, a capped slot's excess to the others."""
    placed = [0] * len(slots)
    open_slots = [index for index, (weight, cap) in enumerate(slots) if weight > 0 and cap > 0]
    remaining = total
    while remaining > 0 and open_slots:
        weight_sum = sum(slots[index][0] for index in open_slots)
        capped = []
        for index in open_slots:
            want = remaining * slots[index][0] // weight_sum
            room = slots[index][1] - placed[index]
            if want >= room:
                capped.append(index)
        if not capped:
            given = 0
            for index in open_slots:
                amount = remaining * slots[index][0] // weight_sum
                placed[index] += amount
                given += amount
            placed[open_slots[0]] += remaining - given  # rounding: to the first device, as llama.cpp's order
            remaining = 0
            break
        for index in capped:
            room = slots[index][1] - placed[index]
            placed[index] += room
            remaining -= room
            open_slots.remove(index)
    return placed


def machines_needed(*, forecast_bytes: int, head_bytes: int, worker_bytes: int) -> int | None:
    """How many machines (this one as the head, the rest as workers like it) hold ``forecast_bytes``.

    None when a worker like this one would add nothing.
    """
    if forecast_bytes <= head_bytes:
        return 1
    if worker_bytes <= 0:
        return None
    return 1 + math.ceil((forecast_bytes - head_bytes) / worker_bytes)

"""Asking RPC workers what they have, with the head's own llama.cpp.

Two looks, cheapest first: a TCP connect with a short timeout (a dead worker is named at once), then
``llama-server --rpc A,B --list-devices``, which speaks the RPC protocol of the very build that will
serve and prints one line per worker device: ``RPC0: 127.0.0.1:50071 (24105 MiB, 24105 MiB free)``.
llama.cpp aborts with a backtrace when a worker fails it; only one line of that reaches a person.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from nemolaunch.core.cluster import RpcEndpoint, Worker, WorkerDevice
from nemolaunch.errors import RpcWorkerFailed, RpcWorkerUnreachable

CONNECT_TIMEOUT_S = 3.0
#: rpc-server serves one head at a time: a worker busy with another head accepts, then never answers.
LIST_TIMEOUT_S = 30.0

_RPC_DEVICE = re.compile(
    r"^\s*(?P<name>RPC\d+):\s*(?P<endpoint>\S+)\s*\((?P<total>\d+) MiB,\s*(?P<free>\d+) MiB free\)\s*$"
)
MiB = 1024**2


def check_reachable(endpoint: RpcEndpoint, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connect: refused, timed out or unresolvable is one line naming the worker."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        raise RpcWorkerUnreachable(endpoint=str(endpoint), reason=f"{endpoint.host} does not resolve") from exc
    except TimeoutError as exc:
        raise RpcWorkerUnreachable(endpoint=str(endpoint), reason=f"no answer within {timeout_s:g} s") from exc
    except OSError as exc:
        raise RpcWorkerUnreachable(endpoint=str(endpoint), reason=(exc.strerror or str(exc)).lower()) from exc


def parse_rpc_devices(text: str) -> dict[str, list[WorkerDevice]]:
    """The RPC devices in ``--list-devices`` output, by the endpoint each belongs to, in order."""
    found: dict[str, list[WorkerDevice]] = {}
    for line in text.splitlines():
        match = _RPC_DEVICE.match(line)
        if match is None:
            continue
        device = WorkerDevice(match["name"], int(match["total"]) * MiB, int(match["free"]) * MiB)
        found.setdefault(match["endpoint"], []).append(device)
    return found


def probe_workers(
    server: Path, endpoints: tuple[RpcEndpoint, ...], *, timeout_s: float = LIST_TIMEOUT_S
) -> tuple[Worker, ...]:
    """Every worker's devices and free memory, or one error naming the first worker that fails."""
    for endpoint in endpoints:
        check_reachable(endpoint)
    argv = [str(server), "--rpc", ",".join(str(endpoint) for endpoint in endpoints), "--list-devices"]
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RpcWorkerFailed(
            endpoint=",".join(str(endpoint) for endpoint in endpoints),
            reason=f"no device list within {timeout_s:g} s; rpc-server serves one head at a time, "
            "so another llama-server may be using it",
        ) from exc
    output = completed.stdout + "\n" + completed.stderr
    devices = parse_rpc_devices(completed.stdout)
    workers = []
    for endpoint in endpoints:
        listed = devices.get(str(endpoint))
        if not listed:
            raise RpcWorkerFailed(endpoint=str(endpoint), reason=_llama_reason(output, endpoint, completed.returncode))
        workers.append(Worker(endpoint, tuple(listed)))
    return tuple(workers)


def _llama_reason(output: str, endpoint: RpcEndpoint, returncode: int) -> str:
    """The one line of llama.cpp's output that says what went wrong, never its backtrace."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in (str(endpoint), "RPC", "error", "failed"):
        for line in lines:
            if marker.lower() in line.lower() and not line.startswith(("#", "[")) and "backtrace" not in line:
                return _trim(line)
    return f"llama-server exited with {returncode} and listed no device for it"


def _trim(line: str) -> str:
    # llama.cpp prefixes its aborts with the source location: keep only the words.
    line = re.sub(r"^\S+\.cpp:\d+:\s*", "", line)
    return line if len(line) <= 200 else line[:197] + "..."

"""What the benchmarks share: a free port, `nemolaunch` itself, a big machine's recorded facts, waiting for
/health, a clean stop.

Imported by name (`import bench_servers`): a benchmark runs as a script, so its folder is on sys.path.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nemolaunch(*args: str) -> list[str]:
    """The real CLI, run by this Python (the checkout's own install)."""
    return [sys.executable, "-m", "nemolaunch", *args]


def write_hardware(path: Path) -> None:
    """Recorded facts of a big CPU machine, so that the planner lets any quant through."""
    facts = {
        "os": "linux",
        "arch": "x86_64",
        "cpu": {"model": "Benchmark CPU", "physical_cores": 8, "logical_cores": 16, "flags": ["avx2"]},
        "memory": {"total_bytes": 1024 * 2**30, "available_bytes": 1000 * 2**30},
        "disk": {"path": str(path.parent), "free_bytes": 10 * 2**40},
        "gpus": [],
    }
    path.write_text(json.dumps(facts))


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def serving(port: int, process: subprocess.Popen[bytes]) -> bool:
    """``healthy(port)``, but a server that has exited fails at once: waiting out the whole timeout for a
    server that is gone (a refused launch, a crash while loading) only hides why it never answered."""
    code = process.poll()
    if code is not None:
        raise RuntimeError(f"the server exited with {code} before /health answered: {' '.join(map(str, process.args))}")
    return healthy(port)


def wait_until(check, timeout_s: float = 300) -> float:
    """Seconds until ``check()`` holds; TimeoutError past ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.01)
    raise TimeoutError(f"not ready within {timeout_s:g} s")


def chat(port: int, body: dict[str, object], *, timeout: float = 600) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a person would; a kill only if it is ignored."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def publish(text: str, out: object) -> None:
    """The table on stdout, and in ``out`` (a Path) when one is given."""
    print(text)
    if out is not None:
        out.write_text(text + "\n")  # type: ignore[attr-defined]

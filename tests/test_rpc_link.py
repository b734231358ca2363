"""RPC over real, shaped links: workers in network namespaces of their own, each link limited by tc tbf.

Needs root (namespaces, tc): without it every test here is skipped with the reason, loudly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shaped_network import ShapedNetwork, shaped_network, why_not_here

from conftest import cli_env, free_port, nemolaunch_argv

pytestmark = pytest.mark.llama

LINK_BITS_PER_S = 1e9


@pytest.fixture
def network() -> Iterator[ShapedNetwork]:
    reason = why_not_here()
    if reason is not None:
        print(f"\nSKIPPED LOUDLY: the shaped-network tests need namespaces and tc: {reason}", file=sys.stderr)
        pytest.skip(f"shaped network: {reason}")
    with shaped_network(1, rate_bits_per_s=LINK_BITS_PER_S) as made:
        yield made
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert made.head_namespace not in listed and made.links[0].namespace not in listed


def start_worker_inside(
    network: ShapedNetwork, llama_bin_dir: Path, llama_cache: Path, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    """`nemolaunch rpc-worker` in worker 0's namespace, on its link's address; returns it and HOST:PORT."""
    link = network.links[0]
    port = free_port()
    argv = nemolaunch_argv(
        "rpc-worker", "--host", link.worker_address, "--port", str(port), "--llama-cpp", str(llama_bin_dir), *extra
    )
    process = subprocess.Popen(
        network.in_worker(0, argv),
        env=cli_env(LLAMA_CACHE=str(llama_cache)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    probe = [sys.executable, "-c", f"import socket; socket.create_connection(('{link.worker_address}', {port}), 1)"]
    deadline = time.monotonic() + 600  # --preload hashes the model first
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"rpc-worker exited with {process.returncode}: {process.stdout.read() if process.stdout else ''}"
            )
        if subprocess.run(network.in_head(probe), capture_output=True, check=False).returncode == 0:
            return process, f"{link.worker_address}:{port}"
        time.sleep(0.2)
    process.kill()
    pytest.fail("rpc-worker did not listen within 600 s")


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.stdout.read() if process.stdout else ""


def test_a_worker_behind_a_shaped_link_is_reached_only_inside_the_namespaces(
    network: ShapedNetwork, llama_bin_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    link = network.links[0]
    # The link is shaped as asked, on the head's end (and the worker's).
    shaping = network.qdisc(0)
    assert shaping["kind"] == "tbf" and shaping["options"]["rate"] == LINK_BITS_PER_S / 8
    # Its addresses exist only inside the namespaces: this machine's own has none of them.
    own = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    assert link.worker_address not in own and link.head_address not in own
    with socket.socket() as outside:
        outside.settimeout(1)
        assert outside.connect_ex((link.worker_address, 50052)) != 0
    worker, endpoint = start_worker_inside(network, llama_bin_dir, tmp_path / "cache")
    try:
        # The head, in its namespace, plans over the worker: asked over the shaped link by llama-server itself.
        planned = subprocess.run(
            network.in_head(nemolaunch_argv(
                "plan", str(tiny_model), "--rpc", endpoint, "--json"
            )),
            env=cli_env(NEMOLAUNCH_LLAMA_CPP=str(llama_bin_dir)),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert planned.returncode == 0, planned.stderr
        plan = json.loads(planned.stdout)
        assert [worker["endpoint"] for worker in plan["workers"]] == [endpoint]
        assert f"RPC worker {endpoint}: CPU" in planned.stderr or f"RPC worker {endpoint}: RPC0" in planned.stderr
        # Asking crossed the link: the head sent the worker bytes over it.
        assert network.bytes_sent(0) > 0
    finally:
        output = stop(worker)
    assert f"tensor cache: {tmp_path / 'cache' / 'rpc'}" in output

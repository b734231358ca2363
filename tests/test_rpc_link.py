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
#: Each worker's log file, by its process id.
logs: dict[int, Path] = {}


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
    # Its output to a file: rpc-server writes a line per tensor it caches, more than a pipe holds unread.
    llama_cache.mkdir(parents=True, exist_ok=True)
    log = (llama_cache / "worker.log").open("w")
    process = subprocess.Popen(
        network.in_worker(0, argv),
        env=cli_env(LLAMA_CACHE=str(llama_cache)),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    log.close()
    logs[process.pid] = llama_cache / "worker.log"
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
    """Stop a process this test started; what it printed."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.pid in logs:
        return logs.pop(process.pid).read_text()
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


def load_over_the_link(network: ShapedNetwork, llama_bin_dir: Path, model: Path, endpoint: str) -> int:
    """llama-server in the head's namespace loads ``model`` over the worker; the bytes that crossed the link."""
    before = network.bytes_sent(0)
    port = free_port()
    head = subprocess.Popen(
        network.in_head([str(llama_bin_dir / "llama-server"), "-m", str(model), "--rpc", endpoint,
                         "--host", "127.0.0.1", "--port", str(port), "--threads", "1", "-c", "512"]),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines = []
    try:
        assert head.stdout is not None
        for line in head.stdout:
            lines.append(line)
            if "listening on http" in line:
                break
        else:
            pytest.fail(f"llama-server exited before it listened: {''.join(lines[-20:])}")
    finally:
        stop(head)
    return network.bytes_sent(0) - before


def test_preload_writes_the_hashes_llama_cpp_sends_so_the_load_sends_no_weights(
    network: ShapedNetwork, llama_bin_dir: Path, tmp_path: Path
) -> None:
    from nemolaunch.adapters.rpc_cache import HASH_THRESHOLD, is_cache_name
    from nemolaunch.scaled_model import ScaledShape, write_scaled_model

    # An Ultra-shaped model whose expert tensors are over the threshold (18 MB each).
    model = write_scaled_model(tmp_path / "scaled.gguf", ScaledShape(n_embd=1024, blocks=1))
    # Cold: an empty cache, which rpc-server fills with what it receives, each file named by llama.cpp's hash.
    worker, endpoint = start_worker_inside(network, llama_bin_dir, tmp_path / "cold")
    try:
        cold_bytes = load_over_the_link(network, llama_bin_dir, model, endpoint)
    finally:
        cold_log = stop(worker)
    received = {path.name: path.stat().st_size for path in (tmp_path / "cold" / "rpc").iterdir()}
    assert received and all(is_cache_name(name) and size > HASH_THRESHOLD for name, size in received.items())
    assert cold_log.count("saved to") == len(received)
    assert cold_bytes > sum(received.values())

    # Preloaded: nemolaunch writes the cache from the worker's own copy, then serves from it.
    worker, endpoint = start_worker_inside(network, llama_bin_dir, tmp_path / "seeded", "--preload", str(model))
    try:
        seeded_bytes = load_over_the_link(network, llama_bin_dir, model, endpoint)
    finally:
        seeded_log = stop(worker)
    seeded = {path.name for path in (tmp_path / "seeded" / "rpc").iterdir() if is_cache_name(path.name)}
    # Every file llama.cpp named is one nemolaunch wrote: the same hash.
    assert set(received) <= seeded, seeded_log
    # The load found every one of them: rpc-server saved nothing, and the link carried none of their bytes.
    assert "saved to" not in seeded_log
    assert cold_bytes - seeded_bytes >= 0.99 * sum(received.values())
    assert "tensor cache seeded in" in seeded_log

"""A real, shaped network on this machine: a head and its workers in network namespaces of their own.

Each worker gets a namespace and a veth pair to the head's namespace; both ends of the pair are
limited with ``tc ... tbf`` (netem is not available here), so what the head sends a worker crosses a
link of a known speed. The addresses (10.218.N.1 on the head's side, 10.218.N.2 on the worker's)
exist only inside these namespaces: nothing outside this machine is ever a target, and the machine's
own namespace is untouched. Every name starts with ``nl18-`` and carries this process's id, so two
runs never meet; ``remove()`` (the context manager's exit) deletes all of it.

Processes run inside with ``ip netns exec NAME ...``; the head's llama-server then listens inside the
head's namespace, so whatever talks HTTP to it runs there too (``in_head``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PREFIX = "nl18"


@dataclass(frozen=True)
class ShapedLink:
    namespace: str  # the worker's
    head_device: str  # the veth end in the head's namespace
    worker_device: str
    head_address: str
    worker_address: str


@dataclass
class ShapedNetwork:
    head_namespace: str
    rate_bits_per_s: float
    links: list[ShapedLink] = field(default_factory=list)

    def in_head(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.head_namespace, *argv]

    def in_worker(self, number: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.links[number].namespace, *argv]

    def bytes_sent(self, number: int) -> int:
        """What the head has sent worker ``number`` so far: its veth end's transmitted bytes."""
        shown = _ip("-n", self.head_namespace, "-s", "-j", "link", "show", "dev", self.links[number].head_device)
        return int(json.loads(shown)[0]["stats64"]["tx"]["bytes"])

    def qdisc(self, number: int) -> dict[str, object]:
        """The shaping on the head's end of link ``number``, as tc reports it."""
        shown = _tc("-n", self.head_namespace, "-j", "qdisc", "show", "dev", self.links[number].head_device)
        return json.loads(shown)[0]

    def remove(self) -> None:
        # Deleting a namespace deletes the veth ends inside it, and with them their peers and qdiscs.
        for name in [link.namespace for link in self.links] + [self.head_namespace]:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def why_not_here() -> str | None:
    """Why namespaces and tc cannot be made on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces and tc need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


@contextmanager
def shaped_network(workers: int, *, rate_bits_per_s: float) -> Iterator[ShapedNetwork]:
    """A head namespace and ``workers`` worker namespaces, each link shaped to ``rate_bits_per_s``."""
    tag = f"{PREFIX}-{os.getpid()}"
    network = ShapedNetwork(head_namespace=f"{tag}-head", rate_bits_per_s=rate_bits_per_s)
    try:
        _ip("netns", "add", network.head_namespace)
        _ip("-n", network.head_namespace, "link", "set", "lo", "up")
        for number in range(1, workers + 1):
            # Interface names are at most 15 characters: nl18-<pid>h<N>.
            short = f"{PREFIX}{os.getpid() % 100000}"
            link = ShapedLink(
                namespace=f"{tag}-w{number}",
                head_device=f"{short}h{number}",
                worker_device=f"{short}w{number}",
                head_address=f"10.218.{number}.1",
                worker_address=f"10.218.{number}.2",
            )
            network.links.append(link)
            _ip("netns", "add", link.namespace)
            _ip("-n", link.namespace, "link", "set", "lo", "up")
            _ip("-n", network.head_namespace, "link", "add", link.head_device, "type", "veth",
                "peer", "name", link.worker_device, "netns", link.namespace)  # fmt: skip
            for namespace, device, address in (
                (network.head_namespace, link.head_device, link.head_address),
                (link.namespace, link.worker_device, link.worker_address),
            ):
                _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", device)
                _ip("-n", namespace, "link", "set", device, "up")
                _shape(namespace, device, rate_bits_per_s)
        yield network
    finally:
        network.remove()


def _shape(namespace: str, device: str, rate_bits_per_s: float) -> None:
    # A bucket of 1 ms of traffic (at least 64 KiB): small enough that the rate holds over a tensor,
    # big enough that the kernel's timer granularity does not throttle below it.
    burst = max(64 * 1024, int(rate_bits_per_s / 8 / 1000))
    _tc("-n", namespace, "qdisc", "add", "dev", device, "root", "tbf",
        "rate", f"{int(rate_bits_per_s)}bit", "burst", str(burst), "latency", "50ms")  # fmt: skip


def _ip(*args: str) -> str:
    return _run("ip", *args)


def _tc(*args: str) -> str:
    return _run("tc", *args)


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout

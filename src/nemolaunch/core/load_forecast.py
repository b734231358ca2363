"""How long a cluster's load takes: the weights each worker receives over its link, and what its cache saves.

What crosses the network (llama.cpp 0c1e570, ggml/src/ggml-rpc/ggml-rpc.cpp): at load the head sends
every weight a worker holds, one tensor after another (the model loader is one thread), so the
workers' times add up. A tensor over ``HASH_THRESHOLD`` (10 MiB) goes as its 64-bit FNV-1a hash
first; a worker whose tensor cache has it (``rpc-server -c``, on by default with ``nemolaunch
rpc-worker``) loads it from its own disk. Then a load costs the head's hashing (FNV-1a is a byte
at a time: a multiply per byte, ~0.9 GB/s on one core) and the worker's disk read, not the link.
A first load pays the hashing too, on both sides (a caching worker hashes what it receives to name
the file), so at 10 Gb/s hashing, not the link, sets the pace.
Per token, each worker's part of the graph ends in the head reading its activations back: at
least one network round trip per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Where a link speed comes from.
LinkSource = Literal["cluster file", "measured", "assumed"]

#: A link no one named: gigabit Ethernet, the common LAN (125 MB/s).
ASSUMED_LINK_BYTES_PER_S = 1e9 / 8
#: FNV-1a over the bytes of each big tensor: one xor and one 64-bit multiply per byte, a dependency
#: chain of ~4 cycles, so ~0.9 GB/s whatever the CPU (measured here: 0.90 GB/s). The head hashes each
#: tensor to ask for it; a worker that caches hashes what it receives again, to name the file.
HASH_BYTES_PER_S = 0.9e9
#: The head reading a weight before it hashes or sends it, and a worker writing or reading back a
#: cached tensor: an NVMe SSD's sequential rate, or the page cache.
DISK_BYTES_PER_S = 2e9
#: One pass over a tensor in memory (zeroing or copying it). ggml-rpc.cpp makes four on a first load: the
#: head builds each message in a zeroed buffer (``new uint8_t[n]()``) and copies the tensor in; the
#: worker receives into a zeroed vector (``resize``), then copies it into its buffer. From its cache,
#: two: the worker reads the file into a zeroed vector and copies it in.
MEMORY_PASS_BYTES_PER_S = 5e9
FIRST_LOAD_PASSES = 4
CACHED_LOAD_PASSES = 2
#: What a load costs beside moving weights: llama.cpp opening the model, --fit, its contexts, buffers
#: and warm-up (measured here: 0.6 s for a 2 GB model alone; with two RPC workers about 1 s more).
LOAD_FIXED_S = 1.5


@dataclass(frozen=True)
class WorkerLoad:
    """One worker's part of a load."""

    host: str
    weights_bytes: int  # what the head sends it at a cold load
    link_bytes_per_s: float
    link_source: LinkSource

    # Nearly all of a big model's bytes are in tensors over 10 MiB (97 % of the 2 GB scaled Ultra's); the
    # plan does not see tensor by tensor, so it prices them all as going by hash first. Each step is
    # serial: the loader waits for the worker's answer to a hash before it goes on.

    @property
    def cold_s(self) -> float:
        """Read on the head, hashed (asked for), sent, hashed again and written by the worker's cache."""
        size = self.weights_bytes
        local = 2 * size / DISK_BYTES_PER_S + 2 * size / HASH_BYTES_PER_S
        return self.link_s + local + FIRST_LOAD_PASSES * size / MEMORY_PASS_BYTES_PER_S

    @property
    def link_s(self) -> float:
        return self.weights_bytes / self.link_bytes_per_s

    @property
    def cached_s(self) -> float:
        """Read and hashed on the head; read back from the worker's own disk."""
        size = self.weights_bytes
        local = 2 * size / DISK_BYTES_PER_S + size / HASH_BYTES_PER_S
        return local + CACHED_LOAD_PASSES * size / MEMORY_PASS_BYTES_PER_S

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "weights_bytes": self.weights_bytes,
            "link_bytes_per_s": self.link_bytes_per_s,
            "link_source": self.link_source,
            "link_s": round(self.link_s, 2),
            "cold_s": round(self.cold_s, 2),
            "cached_s": round(self.cached_s, 2),
        }


@dataclass(frozen=True)
class LoadForecast:
    workers: tuple[WorkerLoad, ...]

    @property
    def cold_s(self) -> float:
        """The first load: every worker's weights over its link, one after another."""
        return LOAD_FIXED_S + sum(worker.cold_s for worker in self.workers)

    @property
    def cached_s(self) -> float:
        """A load whose big tensors every worker has in its cache (a reload, or after --preload)."""
        return LOAD_FIXED_S + sum(worker.cached_s for worker in self.workers)

    @property
    def round_trips_per_token(self) -> int:
        return len(self.workers)

    @property
    def assumed(self) -> bool:
        return any(worker.link_source == "assumed" for worker in self.workers)

    def words(self) -> str:
        """The plan's line: "first load ~N min over the network; next loads ~M s (worker cache)", and why."""
        per_worker = ", ".join(
            f"{worker.host} {worker.weights_bytes / 1e9:.1f} GB at {_rate(worker.link_bytes_per_s)} "
            f"({worker.link_source}) ~{_duration(worker.link_s)} on the link"
            for worker in self.workers
        )
        line = (
            f"first load ~{_duration(self.cold_s)} over the network; next loads ~{_duration(self.cached_s)} "
            f"(worker cache): {per_worker}; each token makes {self.round_trips_per_token} network round "
            f"trip{'s' if self.round_trips_per_token != 1 else ''} (one per worker)"
        )
        if self.assumed:
            line += "; links not named are assumed 1 Gb/s (a cluster file's link_gbit_per_s names them)"
        return line

    def to_json(self) -> dict[str, object]:
        return {
            "cold_s": round(self.cold_s, 2),
            "cached_s": round(self.cached_s, 2),
            "round_trips_per_token": self.round_trips_per_token,
            "assumed_link": self.assumed,
            "workers": [worker.to_json() for worker in self.workers],
        }


def forecast_load(shares: list[tuple[str, int, float | None, LinkSource | None]]) -> LoadForecast:
    """From each worker's (host, weights it holds, link bytes/s or None, where that figure came from)."""
    return LoadForecast(
        tuple(
            WorkerLoad(host, weights, rate, source or "cluster file")
            if rate
            else WorkerLoad(host, weights, ASSUMED_LINK_BYTES_PER_S, "assumed")
            for host, weights, rate, source in shares
        )
    )


def _rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s * 8 / 1e9:g} Gb/s"


def _duration(seconds: float) -> str:
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"

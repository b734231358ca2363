"""How fast this machine reads its RAM, measured in a fraction of a second.

Token generation on the CPU streams the active weights from RAM once per token with every core,
so the figure that matters is a read with every core at once: each thread scans its own slice of a
buffer far larger than the caches for its largest byte (numpy releases the GIL while it scans). A
byte maximum is the lightest scan numpy has (32 bytes a SIMD instruction), so memory, not arithmetic,
sets its pace; a float sum would measure the adder instead (measured here: 19 GB/s a core for a
float64 sum, 29 for the byte maximum). The best of a few passes
is kept: anything slower is the machine being busy, not its memory.
"""

from __future__ import annotations

import threading
import time

#: Large enough to defeat every cache level of a server CPU, small enough to stay well under a second.
BUFFER_BYTES = 256 * 1024**2
PASSES = 3


def measure_read_bandwidth(threads: int, *, buffer_bytes: int = BUFFER_BYTES, passes: int = PASSES) -> float:
    """Bytes per second read from RAM by ``threads`` threads at once (the best of ``passes``)."""
    import numpy as np

    threads = max(1, threads)
    data = np.ones(buffer_bytes, dtype=np.uint8)  # written once, so every page is really mapped
    slices = np.array_split(data, threads)
    best = 0.0
    for _ in range(passes):
        barrier = threading.Barrier(threads + 1)
        workers = [threading.Thread(target=_read, args=(part, barrier)) for part in slices]
        for worker in workers:
            worker.start()
        barrier.wait()
        started = time.perf_counter()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        if elapsed > 0:
            best = max(best, data.nbytes / elapsed)
    return best


def _read(part: object, barrier: threading.Barrier) -> None:
    barrier.wait()  # every thread starts reading at once, when the clock starts
    part.max()  # type: ignore[attr-defined]

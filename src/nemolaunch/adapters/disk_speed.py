"""How fast the disk where models go reads, past the page cache, measured in about a second.

A model larger than memory is read from disk while it runs: each token faults in the routed experts'
slices that the page cache does not hold (1-4 MiB each for a large MoE), a prompt's batch streams
almost every expert. So two figures: large sequential reads, and random reads of 1-4 MiB from a few
threads at once (llama.cpp's threads fault pages in side by side).

The scratch file is written, flushed (fsync) and dropped from the page cache with
``posix_fadvise(DONTNEED)`` before each pass, so the reads reach the disk rather than RAM; it is
removed afterwards whatever happens. It is small (``SCRATCH_BYTES``): a few hundred MB of disk at most.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1024**2
SCRATCH_BYTES = 256 * MiB
SEQUENTIAL_CHUNK = 8 * MiB
RANDOM_SIZES = (1 * MiB, 2 * MiB, 4 * MiB)
RANDOM_THREADS = 4
#: A pass stops early past this: the measurement stays near a second even on a slow disk.
PASS_SECONDS = 0.5


@dataclass(frozen=True)
class DiskSpeed:
    sequential_bytes_per_s: float
    random_bytes_per_s: float
    # Bytes page faults bring in per second, reading random 1 MiB slices of a mapping from a few threads
    # (what llama.cpp does with a mapped model): each fault reads the device's read-ahead window.
    fault_bytes_per_s: float | None = None


def measure_disk_read(folder: Path, *, scratch_bytes: int = SCRATCH_BYTES) -> DiskSpeed | None:
    """Read speeds of the filesystem holding ``folder`` (which must exist); None where it cannot be
    measured there (read-only, full, no fadvise on this platform)."""
    if not hasattr(os, "posix_fadvise"):
        return None  # macOS and Windows: no way to drop the file's pages, so no honest figure
    path = folder / f".nemolaunch-disk-speed-{os.getpid()}"
    try:
        _write_scratch(path, scratch_bytes)
        sequential = _sequential(path, scratch_bytes)
        spread = _random(path, scratch_bytes)
        faulted = _faulted(path, scratch_bytes)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    if sequential <= 0 or spread <= 0:
        return None
    return DiskSpeed(sequential, spread, faulted)


def _write_scratch(path: Path, size: int) -> None:
    # Random bytes: a filesystem that compresses or deduplicates would read zeros faster than weights.
    block = os.urandom(SEQUENTIAL_CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = 0
        while written < size:
            written += os.write(fd, block[: min(len(block), size - written)])
        os.fsync(fd)  # only clean pages can be dropped
    finally:
        os.close(fd)


def _drop_cache(fd: int, size: int) -> None:
    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)


def _sequential(path: Path, size: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd, size)
        done = 0
        started = time.perf_counter()
        while done < size and time.perf_counter() - started < PASS_SECONDS:
            chunk = os.pread(fd, SEQUENTIAL_CHUNK, done)
            if not chunk:
                break
            done += len(chunk)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    return done / elapsed if elapsed > 0 else 0.0


def _storage_read_bytes() -> int | None:
    """What this process has read from storage so far (Linux /proc/self/io), page faults included."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _faulted(path: Path, size: int) -> float | None:
    """Bytes brought in by page faults per second, touching random 1 MiB slices of a mapping."""
    import mmap

    before = _storage_read_bytes()
    if before is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd, size)
        mapping = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    slice_bytes, page = 1 * MiB, mmap.PAGESIZE
    slots = list(range(size // slice_bytes))
    random.Random(1).shuffle(slots)
    lock = threading.Lock()
    deadline = time.perf_counter() + PASS_SECONDS

    def toucher() -> None:
        while time.perf_counter() < deadline:
            with lock:
                if not slots:
                    return
                slot = slots.pop()
            start = slot * slice_bytes
            for offset in range(start, start + slice_bytes, page):
                mapping[offset]  # one byte a page: the fault reads it, and its read-ahead window, in

    elapsed = _run_timed([threading.Thread(target=toucher) for _ in range(RANDOM_THREADS)])
    mapping.close()
    after = _storage_read_bytes()
    read = (after or 0) - before
    return read / elapsed if elapsed > 0 and read > 0 else None


def _random(path: Path, size: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd, size)
        # Each read lands on its own slot of the largest size, once: a repeat would be a cache hit.
        slots = list(range(size // max(RANDOM_SIZES)))
        random.Random(0).shuffle(slots)
        lock = threading.Lock()
        totals: list[int] = []
        deadline = time.perf_counter() + PASS_SECONDS

        def reader(seed: int) -> None:
            pick = random.Random(seed)
            done = 0
            while time.perf_counter() < deadline:
                with lock:
                    if not slots:
                        break
                    slot = slots.pop()
                length = pick.choice(RANDOM_SIZES)
                done += len(os.pread(fd, length, slot * max(RANDOM_SIZES)))
            with lock:
                totals.append(done)

        elapsed = _run_timed([threading.Thread(target=reader, args=(seed,)) for seed in range(RANDOM_THREADS)])
    finally:
        os.close(fd)
    return sum(totals) / elapsed if elapsed > 0 else 0.0


def _run_timed(threads: list[threading.Thread]) -> float:
    """Start ``threads`` together and wait for all: the seconds they took."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started

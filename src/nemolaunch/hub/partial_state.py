"""A partial download and its sidecar: which bytes of the partial file are already the file's.

A file is fetched in pieces of ``piece_bytes`` (the last one shorter), several at once, each written
at its own offset into the partial file (what lies between stays a hole until its bytes come). So
the file's size says how far the furthest piece got, not how much is there; the sidecar next to it,
``<partial>.json``, says that. It names the file and holds, per piece, how many bytes from the
piece's start are written::

    {"format": 1, "sha256": "…", "size": 150000000, "path": "Q/m-00001-of-00002.gguf",
     "commit": "…", "piece_bytes": 67108864, "done": [            67108864,             1048576,  …]}

The sidecar is created whole (temporary file, fsync, rename) before a piece is written, so a partial
file without one is always a plain prefix (left by nemolaunch before pieces, or by huggingface_hub
before it named partial files at random) and is adopted as one. A file fetched as one piece stays a
plain prefix throughout, as before: its size is its progress. After that each
count is a fixed-width, space-padded field overwritten in place, with one small ``pwrite`` right
after the bytes it counts were written: a killed process leaves valid JSON whose counts never run
ahead of the data, so a resume fetches again only what was still in flight, without waiting for any
periodic save. (After a power cut a count may be ahead of data that never reached the disk; the
sha256 check before the file is taken catches that, and the file is fetched again.)

The file is named by its sha256 (the LFS etag), and so is its partial file, so a sidecar can only
describe other bytes if it says so (another sha256 or size), and then the download starts over. A
sidecar from another commit with the same sha256 describes the same bytes and is resumed.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

FORMAT = 1
_WIDTH = 20  # digits of one count: any file size fits
_SUFFIX = ".json"


def sidecar_of(partial: Path) -> Path:
    return partial.with_name(partial.name + _SUFFIX)


def bytes_on_disk(partial: Path, sha256: str, size: int) -> int:
    """How many bytes of the file ``partial`` holds: the sidecar's counts, else a plain prefix's size."""
    sidecar = sidecar_of(partial)
    loaded = _load(sidecar, sha256, size, _data_size(partial))
    if loaded is not None:
        return sum(loaded[1])
    if sidecar.exists():  # a sidecar that does not describe this file: its data is worth nothing
        return 0
    found = _data_size(partial)
    return found if found is not None and found <= size else 0


def discard(partial: Path) -> None:
    """Delete a partial file and its sidecar (the sidecar last: without it the data would pass for a prefix)."""
    partial.unlink(missing_ok=True)
    sidecar_of(partial).unlink(missing_ok=True)


class PartialFile:
    """The pieces of one partial file and how far each is written; thread-safe.

    ``advance`` is called from the fetching threads, ``wait_for_prefix`` from the hashing thread.
    """

    def __init__(
        self, partial: Path, identity: dict[str, object], piece_bytes: int, done: list[int], fields: list[int]
    ) -> None:
        self.partial = partial
        self.identity = identity  # sha256, size, path, commit
        self.size = int(identity["size"])  # type: ignore[call-overload]
        self.piece_bytes = piece_bytes
        self.done = done
        self._fields = fields  # byte offset of each count in the sidecar
        self._sidecar_fd = os.open(sidecar_of(partial), os.O_RDWR)
        self._changed = threading.Condition()
        self._first_open = 0  # the first piece not yet whole: the contiguous prefix ends inside it
        self._advance_first_open()

    # --- opening ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, partial: Path, *, sha256: str, size: int, path: str, commit: str, piece_bytes: int) -> PartialFile:
        """Resume what the sidecar describes, adopt a plain prefix, or start over; either way with a sidecar."""
        identity = {"sha256": sha256, "size": size, "path": path, "commit": commit}
        sidecar = sidecar_of(partial)
        on_disk = _data_size(partial)
        loaded = _load(sidecar, sha256, size, on_disk)
        fresh = False
        if loaded is not None:
            piece_bytes, done = loaded  # the recorded cut into pieces: the counts only mean something for it
        elif not sidecar.exists() and on_disk is not None and 0 < on_disk <= size:
            done = _prefix_as_pieces(on_disk, size, piece_bytes)
        else:
            done, fresh = [0] * _piece_count(size, piece_bytes), True
        fields = _write_sidecar(sidecar, identity, piece_bytes, done)
        if fresh:
            # After the sidecar says 0: a kill in between leaves counts that claim nothing.
            with open(partial, "wb"):
                pass
        return cls(partial, identity, piece_bytes, done, fields)

    def start_over(self, *, piece_bytes: int) -> PartialFile:
        """Forget every byte (the sidecar first) and return the state to fetch into afresh, cut anew."""
        self.close()
        done = [0] * _piece_count(self.size, piece_bytes)
        fields = _write_sidecar(sidecar_of(self.partial), self.identity, piece_bytes, done)
        os.truncate(self.partial, 0)
        return PartialFile(self.partial, self.identity, piece_bytes, done, fields)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._sidecar_fd)

    # --- pieces -----------------------------------------------------------------------------------------
    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.piece_bytes
        return start, min(self.size, start + self.piece_bytes)

    def missing(self, index: int) -> tuple[int, int]:
        """The byte range piece ``index`` still lacks (empty when it is whole)."""
        start, end = self.bounds(index)
        return start + self.done[index], end

    def open_pieces(self) -> list[int]:
        return [index for index in range(len(self.done)) if self.missing(index)[0] < self.bounds(index)[1]]

    def done_bytes(self) -> int:
        return sum(self.done)

    # --- progress ---------------------------------------------------------------------------------------
    def advance(self, index: int, nbytes: int) -> None:
        """Count ``nbytes`` more of piece ``index`` as written (call it after they are)."""
        with self._changed:
            self.done[index] += nbytes
            # One write of a fixed-width field: the sidecar stays valid JSON at every instant.
            os.pwrite(self._sidecar_fd, b"%*d" % (_WIDTH, self.done[index]), self._fields[index])
            if index == self._first_open:
                self._advance_first_open()
                self._changed.notify_all()

    def prefix(self) -> int:
        """Bytes from the file's start that are all written."""
        if self._first_open >= len(self.done):
            return self.size
        return self.bounds(self._first_open)[0] + self.done[self._first_open]

    def wait_for_prefix(self, target: int, quit_event: threading.Event) -> int:
        """Block until ``prefix() >= target`` (or ``quit_event`` is set); return the prefix."""
        with self._changed:
            while self.prefix() < target and not quit_event.is_set():
                self._changed.wait(0.2)
            return self.prefix()

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _advance_first_open(self) -> None:
        while self._first_open < len(self.done):
            start, end = self.bounds(self._first_open)
            if start + self.done[self._first_open] < end:
                return
            self._first_open += 1


# --- the sidecar on disk --------------------------------------------------------------------------------
def _piece_count(size: int, piece_bytes: int) -> int:
    return max(1, -(-size // piece_bytes))


def _prefix_as_pieces(prefix: int, size: int, piece_bytes: int) -> list[int]:
    return [max(0, min(piece_bytes, prefix - index * piece_bytes)) for index in range(_piece_count(size, piece_bytes))]


def _data_size(partial: Path) -> int | None:
    try:
        return partial.stat().st_size
    except OSError:
        return None


def _load(sidecar: Path, sha256: str, size: int, on_disk: int | None) -> tuple[int, list[int]] | None:
    """The sidecar's cut and counts if it describes this file and the partial file (``on_disk`` bytes
    long) holds what they count, else None."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        piece_bytes = int(data["piece_bytes"])
        done = [int(count) for count in data["done"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if data.get("format") != FORMAT or data.get("sha256") != sha256 or data.get("size") != size or piece_bytes < 1:
        return None
    if len(done) != _piece_count(size, piece_bytes):
        return None
    if any(not 0 <= count <= min(piece_bytes, size - index * piece_bytes) for index, count in enumerate(done)):
        return None
    furthest = max((index * piece_bytes + count for index, count in enumerate(done) if count), default=0)
    if on_disk is None or not furthest <= on_disk <= size:  # someone cut the data, or it is not this file's
        return None
    return piece_bytes, done


def _write_sidecar(sidecar: Path, identity: dict[str, object], piece_bytes: int, done: list[int]) -> list[int]:
    """Write the whole sidecar atomically; return the byte offset of each count in it."""
    # ASCII only (json's default), so character offsets are byte offsets.
    head = json.dumps({"format": FORMAT, **identity, "piece_bytes": piece_bytes})[:-1] + ', "done": ['
    fields, parts, offset = [], [], len(head.encode())
    for index, count in enumerate(done):
        if index:
            parts.append(", ")
            offset += 2
        fields.append(offset)
        parts.append(f"{count:>{_WIDTH}d}")
        offset += _WIDTH
    text = head + "".join(parts) + "]}\n"
    temporary = sidecar.with_name(f".{sidecar.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, sidecar)
    return fields

"""One reader for the small files a person names (config, key file, --hardware, --messages).

Only a regular file is read, and only up to a cap: /dev/zero would otherwise fill memory, and a FIFO
would block the open itself (hence O_NONBLOCK, which a regular file ignores). Each kind of wrong
file gets its own one-line refusal, raised as ``SmallFileRefused`` for the caller's table entry.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from nemolaunch.errors import SmallFileRefused

DEFAULT_LIMIT_BYTES = 1024 * 1024


def read_small_bytes(path: Path, *, what: str, option: str, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit_bytes``); SmallFileRefused otherwise."""

    def refuse(problem: str, fix: str) -> SmallFileRefused:
        return SmallFileRefused(option=option, what=what, path=str(path), problem=problem, fix=fix)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise refuse("does not exist", f"create it, or name an existing {what}") from exc
    except PermissionError as exc:
        raise refuse("cannot be read (permission denied)", f"make it readable (chmod u+r {path})") from exc
    except IsADirectoryError as exc:
        raise refuse("is a folder", f"name the {what} itself") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse("is a loop of symbolic links", f"point the link at the {what}") from exc
        raise refuse(f"cannot be opened ({exc.strerror or exc})", f"name a readable {what}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise refuse("is a folder", f"name the {what} itself")
        if stat.S_ISFIFO(mode):
            raise refuse("is a pipe (FIFO), not a file", f"save the {what} to a regular file and name that")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise refuse("is a device, not a file", f"save the {what} to a regular file and name that")
        if not stat.S_ISREG(mode):
            raise refuse("is not a regular file", f"save the {what} to a regular file and name that")
        chunks: list[bytes] = []
        left = limit_bytes + 1  # one byte past the cap tells a file over it
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or exc})", f"name a readable {what}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit_bytes:
        raise refuse(f"is over {limit_bytes} bytes", f"a {what} is small: name the right file")
    return data


def read_small_text(path: Path, *, what: str, option: str, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> str:
    """The file's text, strict UTF-8 (newlines kept as they are)."""
    data = read_small_bytes(path, what=what, option=option, limit_bytes=limit_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SmallFileRefused(
            option=option,
            what=what,
            path=str(path),
            problem=f"is not UTF-8 text (byte {exc.start})",
            fix="save it as UTF-8",
        ) from exc

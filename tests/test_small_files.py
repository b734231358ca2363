"""The one capped reader of small user files: each wrong kind of file gets its own line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nemolaunch.adapters.small_files import read_small_text
from nemolaunch.errors import SmallFileRefused, describe


def _refusal(path: Path, limit: int = 1024) -> str:
    with pytest.raises(SmallFileRefused) as caught:
        read_small_text(path, what="settings file", option="--x", limit_bytes=limit)
    code, line = describe(caught.value)
    assert code != 0 and "\n" not in line
    return line


def test_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_bytes(b"port = 8\r\n")
    assert read_small_text(path, what="settings file", option="--x") == "port = 8\r\n"


def test_device_is_refused_not_read() -> None:
    assert "is a device" in _refusal(Path("/dev/zero"))


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "FIFO" in _refusal(fifo)


def test_folder_loop_missing(tmp_path: Path) -> None:
    assert "is a folder" in _refusal(tmp_path)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert "loop of symbolic links" in _refusal(loop)
    assert "does not exist" in _refusal(tmp_path / "none")


def test_over_cap_and_bad_utf8(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1025)
    assert "over 1024 bytes" in _refusal(big)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in _refusal(bad)

"""The sidecar of a partial download, and the ranged GETs of both transports, in this process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemolaunch.hub import partial_state
from nemolaunch.hub.partial_state import PartialFile
from nemolaunch.hub.range_source import FileSource, Retry, Target, _is_direct

from fakehub import FakeHub, fake_hub_fixture  # noqa: F401  (fixture)

SHA = "a" * 64
IDENTITY = {"sha256": SHA, "size": 10_000, "path": "Q/m.gguf", "commit": "c" * 40}


def open_partial(partial: Path, *, piece_bytes: int = 4096, **changes: object) -> PartialFile:
    identity = {**IDENTITY, **changes}
    return PartialFile.open(partial, piece_bytes=piece_bytes, **identity)  # type: ignore[arg-type]


def write(state: PartialFile, piece: int, nbytes: int) -> None:
    """What a fetching thread does: the bytes at their offset, then their count."""
    offset = state.missing(piece)[0]
    with open(state.partial, "r+b") as out:
        out.seek(offset)
        out.write(bytes((offset + i) % 251 for i in range(nbytes)))
    state.advance(piece, nbytes)


def test_a_new_partial_file_starts_empty_with_a_sidecar_of_zero_counts(tmp_path: Path) -> None:
    partial = tmp_path / "x.incomplete"
    state = open_partial(partial)
    state.close()

    assert partial.stat().st_size == 0
    sidecar = json.loads(partial_state.sidecar_of(partial).read_text())
    assert sidecar["done"] == [0, 0, 0] and sidecar["piece_bytes"] == 4096 and sidecar["sha256"] == SHA
    assert partial_state.bytes_on_disk(partial, SHA, 10_000) == 0
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file of the atomic write is gone


def test_counts_are_written_in_place_and_always_leave_valid_json(tmp_path: Path) -> None:
    partial = tmp_path / "x.incomplete"
    state = open_partial(partial)
    before = partial_state.sidecar_of(partial).stat().st_size
    write(state, 1, 100)
    write(state, 1, 3996)  # piece 1 whole
    write(state, 2, 7)
    write(state, 0, 50)

    assert json.loads(partial_state.sidecar_of(partial).read_text())["done"] == [50, 4096, 7]
    assert partial_state.sidecar_of(partial).stat().st_size == before  # fixed-width fields
    assert state.prefix() == 50
    assert partial.stat().st_size == 8192 + 7  # the hole in piece 0 takes no room
    write(state, 0, 4046)
    assert state.prefix() == 8192 + 7  # piece 0 done joins piece 1, and the prefix runs into piece 2
    state.close()
    assert partial_state.bytes_on_disk(partial, SHA, 10_000) == 4096 + 4096 + 7

    resumed = open_partial(partial, piece_bytes=1)  # the recorded cut into pieces wins
    assert resumed.piece_bytes == 4096 and resumed.missing(2) == (8192 + 7, 10_000)
    assert resumed.open_pieces() == [2]
    resumed.close()


def test_a_plain_prefix_without_a_sidecar_is_adopted(tmp_path: Path) -> None:
    partial = tmp_path / "x.incomplete"
    partial.write_bytes(b"x" * 5000)  # left by a run before pieces, or by an old huggingface_hub
    assert partial_state.bytes_on_disk(partial, SHA, 10_000) == 5000

    state = open_partial(partial)

    assert state.done == [4096, 904, 0]
    assert partial.read_bytes() == b"x" * 5000
    assert partial_state.bytes_on_disk(partial, SHA, 10_000) == 5000  # now counted by the sidecar
    state.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: {**data, "sha256": "b" * 64},  # another file's sidecar
        lambda data: {**data, "size": 9_999},
        lambda data: {**data, "format": 99},
        lambda data: {**data, "done": [5000, 0, 0]},  # more than a piece holds
        lambda data: {**data, "done": [0, 0]},
    ],
)
def test_a_sidecar_that_does_not_describe_this_file_starts_it_over(tmp_path: Path, damage: object) -> None:
    partial = tmp_path / "x.incomplete"
    state = open_partial(partial)
    write(state, 0, 4096)
    state.close()
    sidecar = partial_state.sidecar_of(partial)
    sidecar.write_text(json.dumps(damage(json.loads(sidecar.read_text()))))  # type: ignore[operator]

    assert partial_state.bytes_on_disk(partial, SHA, 10_000) == 0
    again = open_partial(partial)
    assert again.done == [0, 0, 0] and partial.stat().st_size == 0
    again.close()


def test_a_sidecar_cut_short_or_data_cut_under_its_counts_starts_over(tmp_path: Path) -> None:
    partial = tmp_path / "x.incomplete"
    state = open_partial(partial)
    write(state, 0, 4096)
    state.close()
    sidecar = partial_state.sidecar_of(partial)
    text = sidecar.read_text()
    sidecar.write_text(text[: len(text) // 2])
    assert open_partial(partial).done == [0, 0, 0]

    state = open_partial(partial)
    write(state, 0, 4096)
    state.close()
    os.truncate(partial, 4_000)  # someone cut the data: the counts claim bytes that are gone
    assert partial_state.bytes_on_disk(partial, SHA, 10_000) == 0
    assert open_partial(partial).done == [0, 0, 0]


def test_start_over_recuts_and_discard_removes_both(tmp_path: Path) -> None:
    partial = tmp_path / "x.incomplete"
    state = open_partial(partial)
    write(state, 0, 4096)
    fresh = state.start_over(piece_bytes=10_000)

    assert fresh.done == [0] and fresh.missing(0) == (0, 10_000)
    assert json.loads(partial_state.sidecar_of(partial).read_text())["done"] == [0]
    assert partial.stat().st_size == 0
    fresh.close()
    partial_state.discard(partial)
    assert not partial.exists() and not partial_state.sidecar_of(partial).exists()


# --- ranged GETs --------------------------------------------------------------------------------------------
def fetch_range(source: FileSource, target: Target, start: int, end: int, size: int) -> bytes:
    connection = source.connect()
    body = connection.get(target, start, end, size)
    view = memoryview(bytearray(end - start))
    got = 0
    while got < body.length:
        got += body.readinto(view[got : min(body.length, got + 65536)])
    body.close()
    connection.close()
    return bytes(view[:got])


@pytest.mark.parametrize("direct", [True, False], ids=["http.client", "huggingface_hub's client"])
def test_both_transports_read_a_range_from_the_cdn(fake_hub: FakeHub, direct: bool) -> None:
    content = os.urandom(300_000)
    fake_hub.add_repo("acme/X-GGUF", {"Q/m.gguf": content})
    url = f"{fake_hub.url}/acme/X-GGUF/resolve/{fake_hub.repos['acme/X-GGUF'].sha}/Q/m.gguf"
    source = FileSource(
        repo_id="acme/X-GGUF", path="Q/m.gguf", url=url, token="hf_secret", stall_timeout_s=5, translate=RuntimeError
    )
    resolved = source.target()
    assert resolved.url.startswith(fake_hub.cdn_url)  # redirected, not followed by a HEAD
    assert "authorization" not in {key.lower() for key in resolved.headers}  # the token stays at the Hub
    target = Target(resolved.url, resolved.headers, direct)

    assert fetch_range(source, target, 1000, 5000, len(content)) == content[1000:5000]
    assert fetch_range(source, target, 299_000, 300_000, len(content)) == content[299_000:]
    assert [r.range for r in fake_hub.requests if r.method == "GET"] == ["bytes=1000-4999", "bytes=299000-"]
    assert not [r for r in fake_hub.requests if r.server == "cdn" and r.method == "HEAD"]


def test_a_dropped_body_is_a_retry(fake_hub: FakeHub) -> None:
    from fakehub import Fault

    content = os.urandom(300_000)
    fake_hub.add_repo("acme/X-GGUF", {"Q/m.gguf": content})
    fake_hub.add_fault("acme/X-GGUF", "Q/m.gguf", Fault(drop_after=100_000))
    url = f"{fake_hub.url}/acme/X-GGUF/resolve/main/Q/m.gguf"
    source = FileSource(
        repo_id="acme/X-GGUF", path="Q/m.gguf", url=url, token=None, stall_timeout_s=5, translate=RuntimeError
    )
    with pytest.raises(Retry, match=r"ended the transfer early|connection lost"):
        fetch_range(source, source.target(), 0, len(content), len(content))


def test_a_proxy_sends_the_bytes_through_huggingface_hubs_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "")
    assert _is_direct("https://cdn.example/x")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert not _is_direct("https://cdn.example/x")
    assert _is_direct("http://cdn.example/x")  # only https goes through that proxy
    monkeypatch.setenv("no_proxy", "cdn.example")
    assert _is_direct("https://cdn.example/x")


def test_pieces_come_in_two_rounds_per_connection_within_8_and_64_mib() -> None:
    from nemolaunch.hub.piece_runs import piece_bytes_for

    mib = 1024 * 1024
    assert piece_bytes_for(250 * 10**6, 8) == 32 * mib  # 1 GB in 4 shards over up to 32 connections: 8 each
    assert piece_bytes_for(50 * 10**9, 8) == 64 * mib  # a real shard: big pieces, few round trips
    assert piece_bytes_for(10 * mib, 8) == 32 * mib  # small files are not cut finer than 32 MiB
    assert piece_bytes_for(800 * mib, 8) == 50 * mib  # two rounds of 8 connections, between the bounds
    assert piece_bytes_for(10**9, 1) == 10**9  # one connection, one stream: one piece

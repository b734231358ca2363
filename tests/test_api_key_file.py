"""Issue 22 item 3: one key file, one key, both sides. nemolaunch reads --api-key-file the way
llama-server's common/arg.cpp does (std::getline on \\n, the line kept as is, empty and # lines
skipped), and refuses a key with a CR or spaces around it, which the two sides would read differently."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemolaunch.cli.api_key import keys_as_llama_server_reads_them, read_api_key
from nemolaunch.cli.ps import _server_key
from nemolaunch.errors import ApiKeyFileSpaces


def _key_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def test_the_first_key_after_comments_and_blank_lines_is_the_one_sent(tmp_path: Path) -> None:
    path = _key_file(tmp_path, b"# my server\n\nsk-first\nsk-second\n")
    assert [key for _, key in keys_as_llama_server_reads_them(path)] == ["sk-first", "sk-second"]
    assert read_api_key(path) == "sk-first"
    assert _server_key(str(path)) == "sk-first"


@pytest.mark.parametrize(("content", "line"), [(b"sk-a\r\n", 1), (b"sk-a \n", 1), (b"#c\n sk-a\n", 2)])
def test_a_key_with_a_cr_or_spaces_is_refused(tmp_path: Path, content: bytes, line: int) -> None:
    with pytest.raises(ApiKeyFileSpaces) as caught:
        read_api_key(_key_file(tmp_path, content))
    assert caught.value.line == line  # type: ignore[attr-defined]


def test_ps_never_fails_on_a_key_file(tmp_path: Path) -> None:
    # ps never refuses (the server is already up); a key no header can carry is not sent at all.
    assert _server_key(str(_key_file(tmp_path, b"sk-a\r\n"))) is None
    assert _server_key(str(tmp_path / "gone")) is None

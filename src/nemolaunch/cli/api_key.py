"""The API key, for `serve` (handed to llama-server) and `chat` (sent to a server): from a file or the
environment, never from argv, where every user of the machine can read it (`ps`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nemolaunch.cli.output import warn
from nemolaunch.errors import ApiKeyFileEmpty, ApiKeyFileMissing, ApiKeyFileSpaces, BadOption

API_KEY_ENV = "NEMOLAUNCH_API_KEY"


def check_api_key_file(path: Path | None) -> Path | None:
    """The key file, resolved, once it is known to hold a key; a warning when others can read it."""
    if path is None:
        return None
    path = path.expanduser()
    try:
        info = path.stat()
        keys = keys_as_llama_server_reads_them(path)
    except FileNotFoundError as exc:
        raise ApiKeyFileMissing(path=str(path)) from exc
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise BadOption(
            option="--api-key-file", value=str(path), hint="it must be a readable text file holding the key"
        ) from exc
    if not keys:
        raise ApiKeyFileEmpty(path=str(path))
    for line, key in keys:
        if key != key.strip():
            # llama-server would want the key with its CR or spaces; a client sends it stripped: refused both ways.
            raise ApiKeyFileSpaces(path=str(path), line=line)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} is readable by other users: chmod 600 {path}")
    return path.resolve()


def keys_as_llama_server_reads_them(path: Path) -> list[tuple[int, str]]:
    """(line number, key) for each key llama-server's --api-key-file takes: every line split on \\n alone,
    kept byte for byte (a CR or a space stays in the key), except empty lines and lines starting with #."""
    from nemolaunch.adapters.small_files import read_small_text

    # A regular file only, capped, raw bytes decoded as strict UTF-8: a CR stays in its line.
    lines = read_small_text(path, what="key file", option="--api-key-file", limit_bytes=64 * 1024).split("\n")
    return [(number, line) for number, line in enumerate(lines, 1) if line and not line.startswith("#")]


def read_api_key(path: Path | None) -> str | None:
    """The key a client sends: the first key line as llama-server reads it, else NEMOLAUNCH_API_KEY, else None."""
    key_file = check_api_key_file(path)
    if key_file is not None:
        return keys_as_llama_server_reads_them(key_file)[0][1]
    env_key = os.environ.get(API_KEY_ENV)
    if env_key is not None and not env_key.strip():
        raise BadOption(option=API_KEY_ENV, value="(empty)", hint="set it to the key, or unset it")
    return env_key.strip() if env_key else None

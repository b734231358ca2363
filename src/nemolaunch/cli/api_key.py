"""The API key, for `serve` (handed to llama-server) and `chat` (sent to a server): from a file or the
environment, never from argv, where every user of the machine can read it (`ps`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nemolaunch.cli.output import warn
from nemolaunch.errors import ApiKeyFileEmpty, ApiKeyFileMissing, BadOption

API_KEY_ENV = "NEMOLAUNCH_API_KEY"


def check_api_key_file(path: Path | None) -> Path | None:
    """The key file, resolved, once it is known to hold a key; a warning when others can read it."""
    if path is None:
        return None
    path = path.expanduser()
    try:
        info = path.stat()
        first_line = path.read_text().strip()
    except FileNotFoundError as exc:
        raise ApiKeyFileMissing(path=str(path)) from exc
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise BadOption(
            option="--api-key-file", value=str(path), hint="it must be a readable text file holding the key"
        ) from exc
    if not first_line:
        raise ApiKeyFileEmpty(path=str(path))
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} is readable by other users: chmod 600 {path}")
    return path.resolve()


def read_api_key(path: Path | None) -> str | None:
    """The key a client sends: the file's first line, else NEMOLAUNCH_API_KEY, else None."""
    key_file = check_api_key_file(path)
    if key_file is not None:
        return key_file.read_text().strip().splitlines()[0].strip()
    env_key = os.environ.get(API_KEY_ENV)
    if env_key is not None and not env_key.strip():
        raise BadOption(option=API_KEY_ENV, value="(empty)", hint="set it to the key, or unset it")
    return env_key.strip() if env_key else None

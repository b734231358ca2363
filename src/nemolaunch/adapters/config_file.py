"""Reading ``config.toml``: the settings a person keeps (see nemolaunch.core.settings for what they mean)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from nemolaunch.errors import SettingsFileNotToml

#: Names another file (a test's, a second profile); unset: config.toml in the user config folder.
CONFIG_ENV = "NEMOLAUNCH_CONFIG"


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    from platformdirs import user_config_path

    return user_config_path("nemolaunch") / "config.toml"


def read_config(path: Path) -> dict[str, object]:
    """The file's keys; empty when there is no file (the defaults are then all there is)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 has no tomllib; tomli is its backport
        import tomli as tomllib
    if not path.exists() and not path.is_symlink():  # a dangling link or a loop is a wrong file, said so
        return {}
    from nemolaunch.adapters.small_files import read_small_bytes

    # A regular file only, capped: NEMOLAUNCH_CONFIG=/dev/zero or a FIFO gets one line, not a hang.
    raw = read_small_bytes(path, what="settings file", option="the config file")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text
        detail = f"byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8 text"
        raise SettingsFileNotToml(path=str(path), detail=detail) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsFileNotToml(path=str(path), detail=str(exc)) from exc
    return data

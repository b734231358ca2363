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
    if not path.exists():
        return {}
    from nemolaunch.adapters.small_files import read_small_text

    # A regular file only, capped: NEMOLAUNCH_CONFIG=/dev/zero or a FIFO gets one line, not a hang.
    text = read_small_text(path, what="settings file", option="the config file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsFileNotToml(path=str(path), detail=str(exc)) from exc
    return data

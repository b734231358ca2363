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
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsFileNotToml(path=str(path), detail=str(exc)) from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text; tomllib decodes before it parses
        detail = f"byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8 text"
        raise SettingsFileNotToml(path=str(path), detail=detail) from exc
    except OSError as exc:
        raise SettingsFileNotToml(path=str(path), detail=f"it cannot be read: {exc.strerror or exc}") from exc
    return data

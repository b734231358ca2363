"""The settings people repeat, in one model: where each value came from, and every value's check.

Precedence, highest first: a flag on the command line, a ``NEMOLAUNCH_*`` environment variable,
``config.toml`` in the user config folder, nemolaunch's built-in default. serve, run, plan, download
and chat all read their values from here, so each value is checked once, in one place, and a mistake
names where it came from (``--port``, ``NEMOLAUNCH_PORT`` or the file and its key).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from nemolaunch.core.launch import CACHE_TYPES, DEFAULT_HOST, DEFAULT_PORT
from nemolaunch.errors import BadOption, PortOutOfRange, SettingsFileInvalid
from nemolaunch.hub.deadline import DEFAULT_HUB_DEADLINE_S

Origin = Literal["flag", "env", "file", "default"]
ENV_PREFIX = "NEMOLAUNCH_"


def _not_true_or_false(value: object) -> object:
    # pydantic takes true as 1 where a number is meant (`port = true` would become --port 1).
    if isinstance(value, bool):
        raise ValueError("true or false is not a number")
    return value


def _tokens_as_text(value: object) -> object:
    """ctx_size is a number of tokens or the word max: TOML writes the number as a number (ctx_size = 4096)."""
    value = _not_true_or_false(value)
    return str(value) if isinstance(value, (int, float)) else value


Int = Annotated[int, BeforeValidator(_not_true_or_false)]
Float = Annotated[float, BeforeValidator(_not_true_or_false)]


class Settings(BaseModel):
    """Every value a person may set once instead of on every command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # a local .gguf or REPO[:QUANT]; none: the Nemotron 3 Ultra
    quant: str | None = None
    host: str = DEFAULT_HOST
    port: Int = DEFAULT_PORT
    # A number of tokens, or "max"; none: 32768 or the model's maximum.
    ctx_size: Annotated[str | None, BeforeValidator(_tokens_as_text)] = None
    cache_type: str = "f16"
    parallel: Int | None = None  # none: llama-server's own 4 slots
    llama_cpp: str | None = None  # a folder holding llama.cpp's binaries
    api_key_file: str | None = None
    temp: Float = 1.0  # NVIDIA's sampling for Nemotron 3
    top_p: Float = 0.95
    min_p: Float = 0.01
    prefer: str = "quality"
    # A model larger than memory may run with its experts paged from disk (slowly): --allow-disk.
    allow_disk: bool = False
    url: str = f"http://127.0.0.1:{DEFAULT_PORT}/v1"  # where `nemolaunch chat` finds a server
    log_dir: str | None = None  # where `serve` keeps each server's log (`--log-file` names one file instead)
    # Seconds one answer from the Hub (a listing, a model's header) may take in all: a trickle never ends otherwise.
    hub_deadline: Float = DEFAULT_HUB_DEADLINE_S


KEYS: tuple[str, ...] = tuple(Settings.model_fields)
FLAGS = {key: "--" + key.replace("_", "-") for key in KEYS}


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


@dataclass(frozen=True)
class ResolvedSettings:
    values: Settings
    origins: dict[str, Origin]
    file: str | None  # the config file read, when there is one

    def where(self, key: str) -> str:
        """Where a value came from, in the words a person would look for it."""
        origin = self.origins[key]
        if origin == "flag":
            return FLAGS[key]
        if origin == "env":
            return env_name(key)
        if origin == "file":
            return f"{self.file} ({key})"
        return "built-in default"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "settings": {
                key: {"value": getattr(self.values, key), "from": self.origins[key], "where": self.where(key)}
                for key in KEYS
            },
        }


#: What each checked value may be, in the words a mistake's message ends with.
ALLOWED = {
    "port": "use a port from 1 to 65535",
    "parallel": "use 1 or more slots",
    "temp": "use 0 or more (NVIDIA recommends 1.0)",
    "top_p": "use a value from 0 to 1",
    "min_p": "use a value from 0 to 1",
    "ctx_size": "give a number of tokens, or max for the longest that fits",
    "hub_deadline": "give a number of seconds above 0",
}


def _port(value: object) -> str | None:
    return None if isinstance(value, int) and 1 <= value <= 65535 else ALLOWED["port"]


def _positive_slots(value: object) -> str | None:
    return None if value is None or (isinstance(value, int) and value >= 1) else ALLOWED["parallel"]


def _temperature(value: object) -> str | None:
    ok = isinstance(value, float) and math.isfinite(value) and value >= 0
    return None if ok else ALLOWED["temp"]


def _share(value: object) -> str | None:
    return None if isinstance(value, float) and 0.0 <= value <= 1.0 else ALLOWED["top_p"]


def _context(value: object) -> str | None:
    if value is None or str(value).strip().lower() == "max":
        return None
    text = str(value).strip()
    if not text.lstrip("-").isdigit():
        return ALLOWED["ctx_size"]
    return None if int(text) > 0 else "use a positive number of tokens"


def _seconds(value: object) -> str | None:
    ok = isinstance(value, float) and math.isfinite(value) and value > 0
    return None if ok else ALLOWED["hub_deadline"]


def _not_blank(hint: str) -> Callable[[object], str | None]:
    return lambda value: hint if value is not None and not str(value).strip() else None


CHECKS: dict[str, Callable[[object], str | None]] = {
    "port": _port,
    "parallel": _positive_slots,
    "temp": _temperature,
    "top_p": _share,
    "min_p": _share,
    "ctx_size": _context,
    "hub_deadline": _seconds,
    "cache_type": lambda value: None if value in CACHE_TYPES else f"use one of {', '.join(CACHE_TYPES)}",
    "prefer": lambda value: None if value in ("quality", "speed") else "use quality or speed",
    "host": _not_blank("give an address such as 127.0.0.1 or 0.0.0.0"),
    "quant": _not_blank("name a quant such as UD-Q4_K_XL, or leave --quant out"),
    "model": _not_blank("name a .gguf file or REPO[:QUANT], or leave it out"),
    "log_dir": _not_blank("name a folder, or leave it out"),
}


def resolve_settings(
    *,
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    file_values: Mapping[str, object],
    file: str | None,
) -> ResolvedSettings:
    """Merge the four layers (flags > environment > file > defaults) and check every value once."""
    for key in file_values:
        if key not in KEYS:
            raise SettingsFileInvalid(path=file, key=key, problem=f"unknown key (known: {', '.join(KEYS)})")
    merged: dict[str, object] = {}
    origins: dict[str, Origin] = dict.fromkeys(KEYS, "default")
    layers: tuple[tuple[Origin, Mapping[str, object]], ...] = (
        ("file", file_values),
        ("env", {key: environ[env_name(key)] for key in KEYS if env_name(key) in environ}),
        ("flag", {key: value for key, value in flags.items() if value is not None}),
    )
    for origin, values in layers:
        for key, value in values.items():
            merged[key] = value
            origins[key] = origin
    resolved = ResolvedSettings(Settings(), origins, file)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0])
        problem = _plain(error["msg"])
        hint = f"{problem}; {ALLOWED[key]}" if key in ALLOWED else problem
        raise _mistake(resolved, key, merged.get(key), hint) from None
    resolved = ResolvedSettings(settings, origins, file)
    for key, check in CHECKS.items():
        hint = check(getattr(settings, key))
        if hint is not None:
            # The value as it was given (ctx_size = -5 is held as the text "-5").
            raise _mistake(resolved, key, merged.get(key, getattr(settings, key)), hint)
    return resolved


def _plain(message: str) -> str:
    # pydantic's words, without its prefixes: "Input should be a valid integer, unable to parse ..."
    return message.removeprefix("Value error, ").split(",")[0].lower()


def _mistake(resolved: ResolvedSettings, key: str, value: object, hint: str) -> Exception:
    """One line naming where the bad value came from: the flag, the variable, or the file and key."""
    origin = resolved.origins[key]
    if key == "port" and origin == "flag" and isinstance(value, int):
        return PortOutOfRange(port=value, option=FLAGS[key])
    if origin == "file":
        return SettingsFileInvalid(path=resolved.file, key=key, problem=f"{_as_toml(value)} is not valid: {hint}")
    shown = "''" if isinstance(value, str) and not value.strip() else value
    return BadOption(option=resolved.where(key), value=shown, hint=hint)


def _as_toml(value: object) -> str:
    """A value from config.toml as it is written there: true, not Python's True."""
    return str(value).lower() if isinstance(value, bool) else repr(value)

"""Settings for every verb (flags > NEMOLAUNCH_* > config.toml > defaults), and `nemolaunch config`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.output import console, print_json

if TYPE_CHECKING:
    from nemolaunch.core.settings import ResolvedSettings

config_app = typer.Typer(
    help="The settings kept in config.toml and NEMOLAUNCH_* variables: where they are, what is in force.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def load_settings(**flags: object) -> ResolvedSettings:
    """The settings in force for a command: its flags (None: not given) over the environment and the file."""
    from nemolaunch.adapters.config_file import config_path, read_config
    from nemolaunch.core.settings import resolve_settings

    path = config_path(os.environ)
    values = read_config(path)
    given = {key: str(value) if isinstance(value, Path) else value for key, value in flags.items()}
    return resolve_settings(flags=given, environ=os.environ, file_values=values, file=str(path) if values else None)


def llama_cpp_dir(settings: ResolvedSettings) -> Path | None:
    """The llama.cpp folder a flag or config.toml names; from NEMOLAUNCH_LLAMA_CPP, find_binary reads it
    itself (and names the variable as where the build came from)."""
    folder = settings.values.llama_cpp
    return Path(folder) if folder and settings.origins["llama_cpp"] != "env" else None


@config_app.command("show")
def show_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print the settings as one JSON object.")] = False,
) -> None:
    """Each setting in force, and where it came from (a variable, the file, or the built-in default)."""
    from rich.table import Table

    from nemolaunch.core.settings import KEYS, env_name

    settings = load_settings()
    if json_output:
        print_json(settings.to_json())
        return
    table = Table(title=f"nemolaunch settings · file: {settings.file or 'none'}")
    table.add_column("setting", no_wrap=True)
    table.add_column("value")
    table.add_column("from")
    table.add_column("variable", no_wrap=True)
    for key in KEYS:
        value = getattr(settings.values, key)
        table.add_row(key, "" if value is None else str(value), settings.where(key), env_name(key))
    console.print(table)


@config_app.command("path")
def path_command() -> None:
    """Where config.toml is read from (it need not exist)."""
    from nemolaunch.adapters.config_file import config_path

    print(config_path(os.environ))

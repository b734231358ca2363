"""The `nemolaunch` command: thin verbs that parse flags, call the core, render results.

Each verb lives in its own module, and only the verb that runs is imported: `nemolaunch serve` loads
serve's options and nothing of plan, chat or build, and `nemolaunch --help` loads none of them (the
verbs' one-line summaries are in :data:`VERBS`; a test keeps them equal to the verbs' docstrings).
Heavy libraries (huggingface_hub, NVML, openai, gguf/numpy) are imported inside the functions that
need them.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import typer

from nemolaunch import __version__
from nemolaunch.cli.output import err_console, styled
from nemolaunch.errors import NemolaunchError, describe

# llama.cpp's own options may follow, unparsed (`serve -- --flag`, and unknown options before `--`).
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@dataclass(frozen=True)
class Verb:
    name: str
    module: str  # where its command (or, for a group, its Typer app) lives
    attribute: str
    summary: str  # the line `nemolaunch --help` shows: the first line of the command's docstring
    group: bool = False
    pass_through: bool = False


VERBS = (
    Verb("build", "nemolaunch.cli.build", "build_command",
         "Build llama-server, llama-cli, llama-gguf-split and rpc-server from llama.cpp's source."),
    Verb("serve", "nemolaunch.cli.serve", "serve_command",
         "Serve a model with llama-server's OpenAI-compatible API (args after -- go to llama-server).",
         pass_through=True),
    Verb("run", "nemolaunch.cli.run", "run_command",
         "Chat with a model in the terminal through llama-cli (args after -- go to llama-cli).", pass_through=True),
    Verb("chat", "nemolaunch.cli.chat", "chat_command",
         "Chat with a running server in the terminal (/exit leaves, /clear starts over, Ctrl-C stops an answer)."),
    Verb("plan", "nemolaunch.cli.plan", "plan_command",
         "Show every quant of the model against this machine's memory, the one to run, and the command."),
    Verb("download", "nemolaunch.cli.download", "download_command",
         "Download a quant's GGUF shards, resumably, verified against their sha256."),
    Verb("doctor", "nemolaunch.cli.doctor", "doctor_command",
         "Show this machine's CPU, memory, GPUs (free VRAM), disk, the llama.cpp build and build tools."),
    Verb("rpc-worker", "nemolaunch.cli.rpc_worker", "rpc_worker_command",
         "Serve this machine's GPUs (or CPU and RAM) to a head running `nemolaunch serve --rpc`."),
    Verb("ps", "nemolaunch.cli.ps", "ps_command",
         "List the servers and workers nemolaunch launched: address, model, memory, health, busy slots, speed."),
    Verb("stop", "nemolaunch.cli.stop", "stop_command",
         "Stop servers and workers nemolaunch launched: SIGINT, then SIGTERM after a grace period."),
    Verb("logs", "nemolaunch.cli.logs", "logs_command",
         "Show the log of a server nemolaunch launched with --log-file or log_dir (-f follows it)."),
    Verb("tiny-model", "nemolaunch.cli.tiny", "tiny_model_command",
         "Write a tiny random-weight nemotron_h_moe GGUF (Mamba2, attention and latent-MoE layers)."),
    Verb("session", "nemolaunch.cli.session", "session_app",
         "Save and restore a conversation's place in a running server (serve --sessions DIR).", group=True),
    Verb("config", "nemolaunch.cli.settings", "config_app",
         "The settings kept in config.toml and NEMOLAUNCH_* variables: where they are, what is in force.",
         group=True),
)  # fmt: skip


class _Flags:
    debug = False


def _version(value: bool) -> None:
    if value:
        print(f"nemolaunch {__version__}")
        raise typer.Exit()


def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _Flags.debug = debug


def make_app(argv: list[str], environ: Mapping[str, str] = os.environ) -> typer.Typer:
    """The Typer app for this command line: the verb it names imported and registered whole, every
    other verb only by name and summary (enough for `--help` and for "No such command")."""
    app = typer.Typer(
        name="nemolaunch",
        help="Run NVIDIA Nemotron 3 Ultra (or any GGUF) with llama.cpp on your own hardware.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain text: help strings say "[default: ...]" and must show it
    )
    app.callback()(_root)
    # Shell completion names the verb in COMP_WORDS, not argv: it gets every verb whole.
    completing = any(key.startswith("_NEMOLAUNCH_COMPLETE") for key in environ)
    named = _named_verb(argv)
    for verb in VERBS:
        _register(app, verb, _load(verb) if completing or verb.name == named else None)
    return app


def _named_verb(argv: list[str]) -> str | None:
    """The verb argv names: its first word that is not one of the root's options (which take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _load(verb: Verb) -> Any:
    return getattr(importlib.import_module(verb.module), verb.attribute)


def _register(app: typer.Typer, verb: Verb, target: Any) -> None:
    if target is None:
        # A placeholder: listed with its summary, never run (a command line naming the verb loads it).
        def placeholder() -> None:
            raise AssertionError(f"{verb.name} was not loaded")

        app.command(verb.name, short_help=verb.summary, help=verb.summary)(placeholder)
    elif verb.group:
        app.add_typer(target, name=verb.name, short_help=verb.summary)
    else:
        settings = _PASS_THROUGH if verb.pass_through else None
        app.command(verb.name, short_help=verb.summary, context_settings=settings)(target)


def main() -> None:
    # Start-up creates a few hundred thousand objects (modules, classes, functions) that live to the
    # end; at the default threshold (every 700 allocations) the cyclic GC scans them over and over
    # while they are made (~30 ms of a 0.3 s `download` of a cached quant, measured). Every 10,000 is
    # still often enough for a long download or chat.
    gc.set_threshold(10_000, 10, 10)
    try:
        make_app(sys.argv[1:])(prog_name="nemolaunch")
    except NemolaunchError as exc:
        code, message = describe(exc)
        if _Flags.debug:
            traceback.print_exc()
        err_console.print(styled(("nemolaunch: error: ", "bold red"), message))
        sys.exit(code)
    finally:
        # Leaving, nothing is worth the collections Python runs while it tears down (~65 ms, measured);
        # exit handlers and buffers are flushed as always.
        gc.freeze()

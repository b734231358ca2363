"""The `nemolaunch` command: thin verbs that parse flags, call the core, render results.

Each verb lives in its own module; heavy libraries (huggingface_hub, NVML,
openai, gguf/numpy) are imported inside the functions that need them, so
`nemolaunch --help` stays fast.
"""

from __future__ import annotations

import sys
import traceback

import typer

from nemolaunch import __version__
from nemolaunch.cli import build, chat, doctor, download, plan, rpc_worker, serve, session, settings, tiny
from nemolaunch.cli.output import err_console, styled
from nemolaunch.errors import NemolaunchError, describe

app = typer.Typer(
    name="nemolaunch",
    help="Run NVIDIA Nemotron 3 Ultra (or any GGUF) with llama.cpp on your own hardware.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain text: help strings say "[default: ...]" and must show it
)


class _Flags:
    debug = False


def _version(value: bool) -> None:
    if value:
        print(f"nemolaunch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _Flags.debug = debug


app.command("build")(build.build_command)
app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(serve.serve_command)
app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(serve.run_command)
app.command("chat")(chat.chat_command)
app.command("plan")(plan.plan_command)
app.command("download")(download.download_command)
app.command("doctor")(doctor.doctor_command)
app.command("rpc-worker")(rpc_worker.rpc_worker_command)
app.command("tiny-model")(tiny.tiny_model_command)
app.add_typer(session.session_app, name="session")
app.add_typer(settings.config_app, name="config")


def main() -> None:
    try:
        app(prog_name="nemolaunch")
    except NemolaunchError as exc:
        code, message = describe(exc)
        if _Flags.debug:
            traceback.print_exc()
        err_console.print(styled(("nemolaunch: error: ", "bold red"), message))
        sys.exit(code)

"""`nemolaunch chat`: talk to a running server (nemolaunch's or any OpenAI-compatible one) in the terminal.

A terminal on stdin gets a conversation (cli/chat_session.py); a prompt (`-p`, or stdin that is not a
terminal) gets one answer on stdout and an exit, or with `--json` the server's raw response.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from nemolaunch.cli.api_key import API_KEY_ENV, read_api_key
from nemolaunch.cli.output import print_json
from nemolaunch.core.launch import DEFAULT_PORT
from nemolaunch.errors import BadOption

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}/v1"


def chat_command(
    url: Annotated[
        str | None, typer.Option("--url", help=f"The server's OpenAI API base URL [default: {DEFAULT_URL}].")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model to ask for [default: the one the server lists].")
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help=f"File holding the API key [or env {API_KEY_ENV}].")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Answer this one prompt and exit [default: stdin if piped].")
    ] = None,
    hide_thinking: Annotated[
        bool, typer.Option("--hide-thinking", help="Show the answer without the thinking.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="With a prompt: print the server's raw response as JSON.")
    ] = False,
) -> None:
    """Chat with a running server in the terminal (/exit leaves, /clear starts over, Ctrl-C stops an answer)."""
    from nemolaunch.cli.settings import load_settings

    settings = load_settings(url=url, api_key_file=api_key_file).values
    base_url = _check_url(settings.url)
    api_key_file = Path(settings.api_key_file) if settings.api_key_file else None
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()  # `echo question | nemolaunch chat`: the piped text is the prompt
        source = "stdin"
    else:
        source = "--prompt"
    if prompt is not None and not prompt.strip():
        raise BadOption(option=source, value="(empty)", hint="give a question, or leave it out to chat")
    if json_output and prompt is None:
        raise BadOption(option="--json", value="without a prompt", hint="pass -p TEXT or pipe the prompt on stdin")
    api_key = read_api_key(api_key_file)

    from nemolaunch.adapters.chat_client import ChatServer
    from nemolaunch.cli.chat_session import answer_once, converse

    server = ChatServer(base_url, api_key)
    chosen = server.pick_model(model)
    if prompt is None:
        converse(server, chosen, hide_thinking=hide_thinking)
        return
    messages = [{"role": "user", "content": prompt.strip()}]
    if json_output:
        print_json(server.complete_raw(chosen, messages))
        return
    answer_once(server, chosen, messages, hide_thinking=hide_thinking)


def _check_url(url: str) -> str:
    """An http(s) base URL without a trailing slash; a bare server address gets llama-server's /v1."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadOption(option="--url", value=url, hint=f"write the server's base URL, such as {DEFAULT_URL}")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as exc:
        raise BadOption(option="--url", value=url, hint="its port must be a number from 1 to 65535") from exc
    base = url.strip().rstrip("/")
    if parts.path in ("", "/"):
        base += "/v1"
    return base

"""`nemolaunch session save|load|list`: keep a conversation's place in llama-server across restarts.

The server must keep sessions (`nemolaunch serve --sessions DIR`). `save` takes the conversation as an
OpenAI messages list (a JSON file, or stdin) and stores the server's state at the point where the
next turn begins; after a restart, `load` restores it and prints the conversation, so the next turn
reuses the whole prompt instead of processing it again (see nemolaunch.adapters.sessions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nemolaunch.cli.output import note, print_json

session_app = typer.Typer(
    help="Save and restore a conversation's place in a running server (serve --sessions DIR).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NameArgument = Annotated[str, typer.Argument(help="The session's name: letters, digits, '.', '_', '-'.")]
UrlOption = Annotated[str, typer.Option("--url", help="The server's OpenAI base URL.")]
SlotOption = Annotated[int, typer.Option("--slot", help="The server slot (one per --parallel request).")]
KeyFileOption = Annotated[
    Path | None, typer.Option("--api-key-file", help="File holding the server's API key [or env NEMOLAUNCH_API_KEY].")
]
DEFAULT_URL = "http://127.0.0.1:8001/v1"


@session_app.command("save")
def save_command(
    name: NameArgument,
    messages: Annotated[
        Path,
        typer.Option("--messages", help="The conversation: a JSON list of OpenAI messages, or - for stdin."),
    ],
    url: UrlOption = DEFAULT_URL,
    slot: SlotOption = 0,
    api_key_file: KeyFileOption = None,
) -> None:
    """Save the conversation's place in the server, where its next turn will begin."""
    from nemolaunch.adapters.sessions import check_session_name, save_session

    check_session_name(name)
    conversation = _read_messages(messages)
    result = save_session(url, name, conversation, slot=_slot(slot), api_key=_api_key(api_key_file))
    note(f"saved session {name}: {result['tokens']} tokens of slot {slot} ({result['bytes']} bytes on the server)")


@session_app.command("load")
def load_command(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    slot: SlotOption = 0,
    api_key_file: KeyFileOption = None,
) -> None:
    """Restore a saved session into the server; print its conversation (JSON) on stdout."""
    from nemolaunch.adapters.sessions import load_session

    result = load_session(url, name, slot=_slot(slot), api_key=_api_key(api_key_file))
    note(f"restored session {name}: {result['tokens']} tokens into slot {slot}")
    print_json(result["messages"])


@session_app.command("list")
def list_command() -> None:
    """The saved sessions' names, one a line."""
    from nemolaunch.adapters.sessions import list_sessions

    for name in list_sessions():
        print(name)


def _slot(slot: int) -> int:
    if slot < 0:
        from nemolaunch.errors import BadOption

        raise BadOption(option="--slot", value=slot, hint="use a slot number from 0")
    return slot


def _read_messages(path: Path) -> list[dict[str, Any]]:
    from nemolaunch.errors import BadOption

    try:
        if str(path) == "-":
            text = sys.stdin.read()
        else:
            from nemolaunch.adapters.small_files import read_small_text

            text = read_small_text(path.expanduser(), what="messages file", option="--messages")
        data = json.loads(text)
    except OSError as exc:
        raise BadOption(option="--messages", value=str(path), hint=f"it cannot be read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise BadOption(option="--messages", value=str(path), hint=f"it is not JSON ({exc.msg})") from exc
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not (isinstance(data, list) and data and all(isinstance(m, dict) and "role" in m for m in data)):
        raise BadOption(option="--messages", value=str(path), hint="give a JSON list of messages with roles")
    return data


def _api_key(path: Path | None) -> str | None:
    from nemolaunch.cli.api_key import read_api_key

    return read_api_key(path)

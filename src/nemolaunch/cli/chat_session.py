"""The conversation of `nemolaunch chat`: the prompt loop, its commands, Ctrl-C, and how a turn is shown.

The thinking is shown dimmed, apart from the answer (a blank line between), and the speed after it.
Ctrl-C during an answer stops that answer (the connection is closed, so the server stops too) and
keeps the conversation; a second Ctrl-C, at the prompt, leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

from nemolaunch.adapters.chat_client import ChatServer, Message, Piece, TurnStats
from nemolaunch.cli.output import console, err_console, styled
from nemolaunch.errors import Interrupted, NemolaunchError, describe

PROMPT = "> "
_HELP = (
    "/exit (or Ctrl-D) leaves, /clear starts over, /save NAME and /load NAME keep a conversation across "
    "server restarts (serve --sessions DIR), Ctrl-C stops an answer"
)


class TurnPrinter:
    """Writes one turn as it streams: thinking (dim) on ``thinking_to``, the answer on ``answer_to``."""

    def __init__(self, *, answer_to: Console, thinking_to: Console, hide_thinking: bool) -> None:
        self.answer_to, self.thinking_to, self.hide_thinking = answer_to, thinking_to, hide_thinking
        self.answer: list[str] = []
        self._thinking: list[str] = []

    def piece(self, piece: Piece) -> None:
        if piece.kind == "thinking":
            if not self.hide_thinking and not self.answer:
                text = piece.text if self._thinking else piece.text.lstrip("\n")
                self._thinking.append(text)
                self.thinking_to.print(Text(text, style="dim italic"), end="")
            return
        text = piece.text
        if not self.answer:
            text = text.lstrip("\n")
            if not text:
                return
            self._end_thinking()
        self.answer.append(text)
        self.answer_to.print(text, end="", markup=False, highlight=False)

    def _end_thinking(self) -> None:
        # The thinking ends where the answer starts: a blank line keeps them apart.
        if self._thinking:
            ending = "".join(self._thinking)[-2:]
            self.thinking_to.print("\n" * (2 - len(ending) + len(ending.rstrip("\n"))), end="")

    def close(self, stats: TurnStats | None) -> None:
        if self.answer:
            self.answer_to.print()
        elif self._thinking:
            self.thinking_to.print()
        if stats is not None:
            self.thinking_to.print(Text(_speed(stats), style="dim"))

    @property
    def text(self) -> str:
        return "".join(self.answer).strip()


def _speed(stats: TurnStats) -> str:
    tokens = f"{stats.tokens} tokens" if stats.tokens is not None else "tokens"
    if stats.per_second is None:
        return f"[{tokens}]"
    where = "" if stats.measured_by == "server" else ", measured here"
    return f"[{tokens}, {stats.per_second:.1f} tokens/s{where}]"


def show_turn(turn: Iterator[Piece | TurnStats], printer: TurnPrinter) -> str:
    """Print a streamed turn; the answer's text. Ctrl-C propagates once the stream is closed."""
    stats: TurnStats | None = None
    try:
        for item in turn:
            if isinstance(item, TurnStats):
                stats = item
            else:
                printer.piece(item)
    finally:
        turn.close()  # type: ignore[attr-defined]  # a generator: closing it closes the HTTP stream
    printer.close(stats)
    return printer.text


def answer_once(server: ChatServer, model: str, messages: list[Message], *, hide_thinking: bool) -> None:
    """One prompt: the answer on stdout (for pipes), the thinking and the speed on stderr."""
    printer = TurnPrinter(answer_to=console, thinking_to=err_console, hide_thinking=hide_thinking)
    try:
        show_turn(server.stream(model, messages), printer)
    except KeyboardInterrupt:
        console.print()  # the partial answer keeps its line; the error has its own
        raise Interrupted(what="the answer", after="the server stopped generating it") from None


def converse(server: ChatServer, model: str, *, hide_thinking: bool) -> None:
    """The prompt loop, until /exit, Ctrl-D or a second Ctrl-C."""
    _enable_line_editing()
    console.print(styled("Chatting with ", (model, "bold"), f" at {server.url}."))
    console.print(Text(_HELP + ".", style="dim"))
    messages: list[Message] = []
    leaving = False  # after one Ctrl-C: the next one leaves
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:
            console.print()
            if leaving:
                return
            leaving = True
            console.print(Text("(Ctrl-C again, /exit or Ctrl-D leaves)", style="dim"))
            continue
        leaving = False
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if text in ("/exit", "/quit", "/bye"):
                return
            _command(text, messages, server)
            continue
        messages.append({"role": "user", "content": text})
        answer, leaving = _turn(server, model, messages, hide_thinking=hide_thinking)
        if answer is None:
            messages.pop()  # a stopped or failed turn is left out of the conversation
        else:
            messages.append({"role": "assistant", "content": answer})


def _turn(server: ChatServer, model: str, messages: list[Message], *, hide_thinking: bool) -> tuple[str | None, bool]:
    """The answer (None when stopped or failed), and whether a Ctrl-C stopped it."""
    printer = TurnPrinter(answer_to=console, thinking_to=console, hide_thinking=hide_thinking)
    try:
        return show_turn(server.stream(model, messages), printer), False
    except KeyboardInterrupt:
        console.print()
        console.print(Text("(stopped; this turn is left out. Ctrl-C again leaves)", style="dim"))
        return None, True
    except NemolaunchError as exc:
        # The conversation goes on: the server may be back, or the key fixed, by the next question.
        console.print()
        err_console.print(styled(("nemolaunch: error: ", "bold red"), describe(exc)[1]))
        return None, False


def _command(text: str, messages: list[Message], server: ChatServer) -> None:
    word, _, name = text.partition(" ")
    if word == "/clear":
        messages.clear()
        console.print(Text("(conversation cleared)", style="dim"))
    elif word in ("/save", "/load") and name.strip():
        try:
            _session(word, name.strip(), messages, server)
        except NemolaunchError as exc:  # the conversation goes on: a name or the server can be fixed
            err_console.print(styled(("nemolaunch: error: ", "bold red"), describe(exc)[1]))
    else:
        console.print(Text(f"(unknown command {text}: {_HELP})", style="dim"))


def _session(word: str, name: str, messages: list[Message], server: ChatServer) -> None:
    """/save: the server's state where the next turn begins; /load: that state and the conversation back."""
    from nemolaunch.adapters.sessions import load_session, save_session

    if word == "/save":
        saved = save_session(server.url, name, list(messages), api_key=server.api_key)
        console.print(Text(f"(saved {name}: {saved['tokens']} tokens)", style="dim"))
        return
    loaded = load_session(server.url, name, api_key=server.api_key)
    messages[:] = loaded["messages"]
    console.print(Text(f"(loaded {name}: {len(messages)} messages, {loaded['tokens']} tokens)", style="dim"))


def _enable_line_editing() -> None:
    # Importing readline gives input() history and editing; it is not on every platform, nor needed.
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401

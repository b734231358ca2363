"""The consoles every verb writes to: results on stdout, words for people on stderr."""

from __future__ import annotations

import json
import shlex
import sys

from rich.console import Console

# soft_wrap: a long command line stays one line, so it can be copied and pasted.
console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", markup=True)


def note(message: str) -> None:
    err_console.print(message, markup=False)


def print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def print_command(argv: list[str], *, to_stderr: bool = False) -> None:
    """The exact command line, shell-quoted: on stdout when it is the result (a dry run), else on stderr,
    so that what the launched program prints on stdout stays its own."""
    # Plain write: rich must not re-wrap or colour what a person will paste.
    stream = sys.stderr if to_stderr else sys.stdout
    stream.write(shlex.join(argv) + "\n")
    stream.flush()

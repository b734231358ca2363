"""The consoles every verb writes to: results on stdout, words for people on stderr."""

from __future__ import annotations

import json
import shlex
import sys

from rich.console import Console
from rich.text import Text

# soft_wrap: a long command line stays one line, so it can be copied and pasted.
# markup=False: messages carry paths, aliases and file names, and a "[" in them must print as
# itself, never be read as a style tag. Styled words are built as Text.
console = Console(soft_wrap=True, highlight=False, markup=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings and (text, style) pairs as one Text: styles without markup parsing."""
    return Text.assemble(*parts)


def warn(message: str) -> None:
    err_console.print(styled(("warning: ", "yellow"), message))


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

"""The consoles every verb writes to: results on stdout, words for people on stderr."""

from __future__ import annotations

import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

from nemolaunch.errors import without_credentials

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


class _LazyConsole:
    """A rich Console made on first use: `nemolaunch --help` prints nothing through it, and rich's import
    is a sixth of the CLI's start-up."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def real(self) -> Console:
        """The Console itself, for rich objects that are handed one (a Progress)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


# soft_wrap: a long command line stays one line, so it can be copied and pasted.
# markup=False: messages carry paths, aliases and file names, and a "[" in them must print as
# itself, never be read as a style tag. Styled words are built as Text.
console: Console = _LazyConsole(soft_wrap=True, highlight=False, markup=False)  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True, soft_wrap=True, highlight=False, markup=False)  # type: ignore[assignment]


def real_console(lazy: Console) -> Console:
    """The rich Console behind ``console`` or ``err_console``: rich's own objects need the real one."""
    return lazy.real() if isinstance(lazy, _LazyConsole) else lazy


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings and (text, style) pairs as one Text: styles without markup parsing."""
    from rich.text import Text

    return Text.assemble(*parts)


def warn(message: str) -> None:
    err_console.print(styled(("warning: ", "yellow"), without_credentials(message)))


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

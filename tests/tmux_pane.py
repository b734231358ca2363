"""A real terminal for tests: a tmux pane running a shell, keys sent to it, its screen read back, and
every process started under it accounted for."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import cli_env


def tmux(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=False)


class Pane:
    def __init__(self, target: str) -> None:
        self.target = target

    @property
    def shell_pid(self) -> int:
        return int(tmux("display-message", "-p", "-t", self.target, "#{pane_pid}").stdout.strip())

    def send(self, *keys: str) -> None:
        """Keys as tmux names them: text, "Enter", "C-c"."""
        tmux("send-keys", "-t", self.target, *keys)

    def type_line(self, text: str) -> None:
        tmux("send-keys", "-t", self.target, "-l", text)  # literally: no key names in a prompt
        tmux("send-keys", "-t", self.target, "Enter")

    def screen(self) -> str:
        return tmux("capture-pane", "-p", "-J", "-S", "-500", "-t", self.target).stdout

    def wait_for(self, text: str, *, after: str = "", timeout: float = 60) -> str:
        """The screen once ``text`` shows on it (after the last ``after``, when given); fails with the screen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in (screen.rsplit(after, 1)[-1] if after else screen):
                return screen
            time.sleep(0.2)
        pytest.fail(f"{text!r} never showed in the pane:\n{self.screen()[-3000:]}")

    def children(self) -> list[int]:
        return descendants(self.shell_pid)


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid``, children first."""
    found: list[int] = []
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return found
    for child in children:
        found += [child, *descendants(child)]
    return found


def wait_until_gone(pane: Pane, timeout: float = 20) -> list[int]:
    """Wait for the pane's shell to have no process under it; what is left (empty when all is gone)."""
    deadline = time.monotonic() + timeout
    while pane.children() and time.monotonic() < deadline:
        time.sleep(0.2)
    return pane.children()


@pytest.fixture
def terminal() -> Iterator[Callable[..., Pane]]:
    """Opens panes (each a bash in a tmux window of one session) with cli_env(); kills the session at the end."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it): the real-terminal tests did not run")
    session = f"nemolaunch-term-{time.monotonic_ns()}"
    env_args = [arg for key, value in cli_env().items() for arg in ("-e", f"{key}={value}")]
    opened: list[Pane] = []

    def open_pane(**extra_env: str) -> Pane:
        extra = [arg for key, value in extra_env.items() for arg in ("-e", f"{key}={value}")]
        # -P -F: tmux names the new pane, whatever base-index a tmux.conf sets.
        if not opened:
            where = ["new-session", "-d", "-s", session, "-x", "160", "-y", "50"]
        else:
            where = ["new-window", "-d", "-t", session]
        started = tmux(*where, "-P", "-F", "#{pane_id}", *env_args, *extra, "bash", "--norc")
        assert started.returncode == 0, started.stderr
        pane = Pane(started.stdout.strip())
        opened.append(pane)
        return pane

    yield open_pane
    tmux("kill-session", "-t", session)

"""Shared fixtures: the real llama.cpp build, small GGUF files, and running the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where the launches of this test run leave their records (serve, run and rpc-worker write one each):
#: never the user's own state folder, whose records name real servers `nemolaunch stop --all` would stop.
TEST_STATE_HOME = Path(tempfile.gettempdir()) / f"nemolaunch-test-state-{os.getpid()}"
#: Set by scripts/test.sh after `nemolaunch build`: the smoke tests must then run, not skip.
TEST_LLAMA_CPP_ENV = "NEMOLAUNCH_TEST_LLAMA_CPP"
#: Every process this run starts inherits this mark (cli_env keeps it: no NEMOLAUNCH_ or LLAMA_ prefix),
#: so the end-of-run check finds the suite's own servers even after they were orphaned, and never
#: anyone else's. The value is unique to the run: two suites on one machine tell theirs apart.
SUITE_MARK_ENV = "NL_TEST_SUITE_RUN"
SUITE_MARK = f"{os.getpid()}-{os.urandom(4).hex()}"
os.environ[SUITE_MARK_ENV] = SUITE_MARK


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sigint_default() -> None:
    """``preexec_fn`` of a process a test will Ctrl-C: SIGINT back to its default in the child.

    A shell without job control (``( ... ) &``, a nohup'd script, some CI runners) starts the suite with
    SIGINT ignored, and an ignored signal stays ignored across fork and exec: Python then never raises
    KeyboardInterrupt, and a Ctrl-C test would prove nothing (or hang until its timeout).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session", autouse=True)
def _test_state_home() -> Iterator[None]:
    yield
    shutil.rmtree(TEST_STATE_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def llama_bin_dir() -> Path:
    """The folder holding a real llama-server / llama-cli built from llama.cpp's source."""
    named = os.environ.get(TEST_LLAMA_CPP_ENV)
    if named:
        folder = Path(named)
        for binary in ("llama-server", "llama-cli", "llama-gguf-split"):
            assert (folder / binary).is_file(), f"{TEST_LLAMA_CPP_ENV}={named} has no {binary}"
        return folder
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.errors import LlamaCppNotFound

    try:
        return find_binary("llama-server", env={"PATH": os.environ.get("PATH", "")}).path.parent
    except LlamaCppNotFound:
        pytest.skip("no llama.cpp build: run `bash scripts/test.sh`, which builds one")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded tiny nemotron_h_moe model, written by the real `nemolaunch tiny-model`."""
    path = tmp_path_factory.mktemp("tiny") / "tiny-nemotron.gguf"
    result = run_nemolaunch("tiny-model", str(path))
    assert result.returncode == 0, result.stderr
    return path


def path_without(tmp_path: Path, *hidden: str) -> str:
    """A PATH holding every tool of this machine except ``hidden`` (a machine that lacks them).

    Every tool is kept where this PATH finds it first, as ``shutil.which`` does, so a cmake that
    lives in a virtualenv's bin/ (beside python, pip and more) survives the hiding of a compiler.
    """
    shims = tmp_path / "bin"
    shims.mkdir(exist_ok=True)
    folders = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/local/bin", "/usr/bin", "/bin"]
    for folder in folders:
        if not folder or not os.path.isdir(folder) or Path(folder).resolve() == shims.resolve():
            continue
        for entry in os.scandir(folder):
            target = shims / entry.name
            if entry.name in hidden or target.exists() or target.is_symlink():
                continue
            target.symlink_to(entry.path)
    return str(shims)


#: What llama.cpp built from a tree without git metadata (an sdist, an archive) says to --version.
NO_GIT_VERSION = "version: 0.5.0-dev (build 0, commit unknown)"


def llama_cpp_shim(folder: Path, *, devices: tuple[str, ...] = (), version: str = NO_GIT_VERSION) -> Path:
    """A llama.cpp bin folder of the test's own, answering only ``--version`` and ``--list-devices``.

    For tests that need a build of a known kind whatever build this machine has (a CPU-only build on
    a GPU machine, a version without a commit): the build is made explicit, at the binary's edge.
    Its llama-server and llama-cli print what llama.cpp prints, and refuse to run anything else.
    """
    folder.mkdir(parents=True, exist_ok=True)
    listing = "".join(f"  {line}\\n" for line in devices)  # printf's escape, not a newline in the script
    for name in ("llama-server", "llama-cli"):
        binary = folder / name
        binary.write_text(
            "#!/bin/sh\n"
            'case "$1" in\n'
            f"  --version) printf '%s\\nbuilt with cc for Linux x86_64\\n' '{version}' >&2 ;;\n"
            f"  --list-devices) printf 'Available devices:\\n{listing}' ;;\n"
            "  *) echo 'a stand-in for llama.cpp: it only answers --version and --list-devices' >&2; exit 1 ;;\n"
            "esac\n"
        )
        binary.chmod(0o755)
    return folder


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a nemolaunch subprocess: this one, minus anything that would steer it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEMOLAUNCH_", "LLAMA_"))}
    # A config.toml of this machine's user must not steer the tests: point at one that is not there.
    env["NEMOLAUNCH_CONFIG"] = str(REPO_ROOT / "tests" / "fixtures" / "no-such-config.toml")
    env["XDG_STATE_HOME"] = str(TEST_STATE_HOME)
    env.update(extra)
    env.setdefault("COLUMNS", "200")
    return env


def nemolaunch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "nemolaunch", *args]


def run_nemolaunch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nemolaunch_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else cli_env(),
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        check=False,
    )


def write_gguf(path: Path, *, arch: str = "llama", context_length: int = 256, **kv: str | int) -> Path:
    """A small, valid GGUF (not a loadable model): enough for header checks."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_context_length(context_length)
    for key, value in kv.items():
        if isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    writer.add_tensor("token_embd.weight", np.arange(64 * 32, dtype=np.float32).reshape(64, 32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def gguf_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "model.gguf", **kwargs: str | int) -> Path:
        return write_gguf(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Popen objects a test starts; any still running at the end are killed, so none is orphaned."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def big_machine(tmp_path: Path) -> Path:
    """Recorded facts of a 64 GB CPU machine: everything tiny fits."""
    path = tmp_path / "machine.json"
    path.write_text(
        json.dumps(
            {
                "os": "linux",
                "arch": "x86_64",
                "cpu": {"model": "Test CPU", "physical_cores": 8, "logical_cores": 16, "flags": ["avx2"]},
                "memory": {"total_bytes": 64 * 2**30, "available_bytes": 60 * 2**30},
                "disk": {"path": str(tmp_path), "free_bytes": 500 * 2**30},
                "gpus": [],
            }
        )
    )
    return path


#: The llama.cpp programs a test may start; none may outlive the run.
LLAMA_PROGRAMS = frozenset({"llama-server", "rpc-server", "ggml-rpc-server", "llama-cli"})


def _suite_llama_processes() -> list[tuple[int, str]]:
    """(pid, name) of each live llama.cpp program started by this run: it carries the run's mark in its
    environment, or descends from this process (a test that handed it an environment of its own)."""
    import psutil

    me = os.getpid()
    found = []
    for process in psutil.process_iter(["name", "exe", "status"]):
        try:
            name = Path(process.info["exe"] or process.info["name"] or "").name
            if name not in LLAMA_PROGRAMS or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            marked = process.environ().get(SUITE_MARK_ENV) == SUITE_MARK
            if marked or any(parent.pid == me for parent in process.parents()):
                found.append((process.pid, name))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a llama-server, rpc-server or llama-cli it started is still alive: each one is
    named, then killed, so a failing run leaves nothing behind either."""
    import time

    import psutil

    deadline = time.monotonic() + 10  # one stopped just before the end may still be tearing down
    left = _suite_llama_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _suite_llama_processes()
    if not left:
        return
    for pid, _ in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    names = ", ".join(f"{name} (pid {pid})" for pid, name in left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"\nthe test run left {names} running (killed now): a test did not stop what it started"
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(message, red=True, bold=True)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

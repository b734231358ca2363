"""Runs scripts/build_llamacpp.sh, which alone knows the CMake recipe.

This adapter picks the build's folder (one per backend and source, so CPU and
CUDA builds live side by side), streams the script's output into a log file,
and turns CMake's ``[ NN%]`` lines into progress callbacks.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nemolaunch.errors import BuildFailed, BuildSourceInvalid, BuildToolMissing, BuildUsage

_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_SCRIPT_ERROR = re.compile(r"^build_llamacpp: error: (?P<reason>.+)$")
# The script's exit codes (see its header).
_SCRIPT_USAGE, _SCRIPT_TOOL, _SCRIPT_SOURCE = 2, 3, 4


@dataclass(frozen=True)
class BuildRequest:
    backend: str  # cuda, metal or cpu: resolved by the caller, never "auto"
    source: Path | None  # a llama.cpp tree or an archive holding one; None: git clone
    ref: str | None
    jobs: int | None
    prefix: Path
    cuda_arch: str | None = None  # CMAKE_CUDA_ARCHITECTURES; None: llama.cpp's "native"
    web_ui: str = "off"  # npm, prebuilt or off: resolved by the caller (see web_ui_mode)


@dataclass(frozen=True)
class BuildResult:
    prefix: Path
    log: Path
    up_to_date: bool

    @property
    def bin_dir(self) -> Path:
        return self.prefix / "bin"

    @property
    def web_ui(self) -> str | None:
        """What llama-server got for its web UI, in the script's words; None for a build that does not say."""
        return web_ui_of(self.bin_dir)


WEB_UI_FILE = "web-ui.txt"
WEB_UI_MODES = ("auto", "npm", "prebuilt", "off")


def web_ui_of(bin_dir: Path) -> str | None:
    """The web UI a build of nemolaunch's holds ("built with npm ...", "none: ..."), from its record.

    A nemolaunch build from before the UI was offered has a stamp and no record: it has no UI.
    Anything else (a llama.cpp on PATH, a folder of someone's) is unknown: None.
    """
    prefix = bin_dir.parent
    try:
        return (prefix / WEB_UI_FILE).read_text().strip() or None
    except OSError:
        pass
    if (prefix / "build-stamp.txt").is_file():
        return "none: this build predates nemolaunch's web UI support; run `nemolaunch build` again to add it"
    return None


def web_ui_mode(requested: str, *, hub_reachable: Callable[[], bool] | None = None) -> str:
    """npm, prebuilt or off: what ``auto`` means on this machine (npm first: it needs no Hub)."""
    if requested != "auto":
        return requested
    if shutil.which("npm"):
        return "npm"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return "off"
    return "prebuilt" if (hub_reachable or _hub_answers)() else "off"


def _hub_answers() -> bool:
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=3):
            return True
    except OSError:
        return False


def script_path() -> Path:
    """The build script as installed with the package (a copy of scripts/build_llamacpp.sh)."""
    return Path(str(resources.files("nemolaunch") / "data" / "build_llamacpp.sh"))


def source_key(source: Path | None, ref: str | None) -> str:
    """A short, stable name for a source: an archive's content, a folder's path, or a git ref."""
    digest = hashlib.sha256()
    if source is None:
        digest.update(f"git:{ref or 'pinned'}".encode())
    elif source.is_file():
        with source.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(f"dir:{source.resolve()}".encode())
    return digest.hexdigest()[:12]


def build_prefix(
    root: Path,
    *,
    backend: str,
    source: Path | None,
    ref: str | None,
    cuda_arch: str | None = None,
    web_ui: str = "off",
) -> Path:
    """One folder per build key, so that builds for other backends or GPU targets live side by side.

    A build with the web UI gets its own folder too: the build without it stays as it was (up to
    date, usable), and the newest build, the one with the UI, is the one found.
    """
    target = "" if cuda_arch is None else "sm" + re.sub(r"[^0-9A-Za-z]+", "_", cuda_arch) + "-"
    ui = "" if web_ui == "off" else "ui-"
    return root / f"{backend}-{target}{ui}{source_key(source, ref)}"


def script_argv(request: BuildRequest, *, script: Path) -> list[str]:
    argv = ["bash", str(script), "--backend", request.backend, "--prefix", str(request.prefix)]
    argv += ["--web-ui", request.web_ui]
    if request.source is not None:
        argv += ["--source", str(request.source)]
    if request.ref is not None:
        argv += ["--ref", request.ref]
    if request.jobs is not None:
        argv += ["--jobs", str(request.jobs)]
    if request.cuda_arch is not None:
        argv += ["--cuda-arch", request.cuda_arch]
    return argv


def run_build(
    request: BuildRequest,
    *,
    on_progress: Callable[[int, str], None] | None = None,
    script: Path | None = None,
    env: dict[str, str] | None = None,
) -> BuildResult:
    """Build (or find up to date) llama.cpp in ``request.prefix``; raise a BuildError on failure."""
    created = not request.prefix.exists()
    request.prefix.mkdir(parents=True, exist_ok=True)
    log_path = request.prefix / "build.log"
    argv = script_argv(request, script=script or script_path())
    # One build per prefix at a time: a second `nemolaunch build` waits rather than corrupts.
    with (request.prefix / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # before the log is truncated: a running build keeps its log
        code, up_to_date, last_error = _run_script(argv, log_path, env=env, on_progress=on_progress)
    if code == 0:
        return BuildResult(prefix=request.prefix, log=log_path, up_to_date=up_to_date)
    reason = last_error or f"the build script exited with {code}"
    if created and code in (_SCRIPT_USAGE, _SCRIPT_TOOL, _SCRIPT_SOURCE):
        # Refused before building anything: leave no empty build folder behind (the reason is the message).
        shutil.rmtree(request.prefix, ignore_errors=True)
    if code == _SCRIPT_TOOL:
        raise BuildToolMissing(reason=reason)
    if code == _SCRIPT_SOURCE:
        raise BuildSourceInvalid(reason=reason)
    if code == _SCRIPT_USAGE:
        raise BuildUsage(reason=reason)
    raise BuildFailed(log=str(log_path), exit_code=code)


def _run_script(
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None,
    on_progress: Callable[[int, str], None] | None,
) -> tuple[int, bool, str | None]:
    """Run the build script, teeing its output into the log; its exit code, up-to-date flag, last error."""
    up_to_date = False
    last_error: str | None = None
    highest = 0
    # Its own process group, so that stopping the build stops cmake, make and every compiler under it.
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        ) as process,
    ):
        assert process.stdout is not None
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                stripped = line.rstrip("\n")
                if (match := _PERCENT.match(stripped)) and on_progress is not None:
                    # Parallel targets print their own percentages; a bar must never go back.
                    highest = max(highest, min(int(match.group(1)), 100))
                    on_progress(highest, stripped)
                if (match := _SCRIPT_ERROR.match(stripped)) is not None:
                    last_error = match["reason"]
                if stripped.startswith("build_llamacpp: up to date"):
                    up_to_date = True
            code = process.wait()
        except BaseException:
            # Ctrl-C or any failure here must not leave a compiler running.
            _stop_group(process)
            raise
    return code, up_to_date, last_error


def _stop_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def log_tail(log: Path, lines: int = 25) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []

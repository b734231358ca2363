"""Finding llama.cpp's binaries and reading their version.

Search order: an explicit folder (``--llama-cpp`` or ``NEMOLAUNCH_LLAMA_CPP``),
then nemolaunch's own builds (the newest that suits this machine, GPU builds
first where a GPU driver is present), then ``PATH``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nemolaunch.errors import LlamaCppDirInvalid, LlamaCppNotFound

ENV_DIR = "NEMOLAUNCH_LLAMA_CPP"
STAMP_NAME = "build-stamp.txt"


def builds_root() -> Path:
    """Where ``nemolaunch build`` keeps its builds, one folder per build key."""
    from platformdirs import user_data_path

    return user_data_path("nemolaunch") / "llama.cpp"


@dataclass(frozen=True)
class Build:
    """One of nemolaunch's own builds, described by its stamp."""

    prefix: Path
    backend: str
    source: str
    built_at: float

    @property
    def bin_dir(self) -> Path:
        return self.prefix / "bin"


@dataclass(frozen=True)
class Found:
    path: Path
    origin: str  # "--llama-cpp", "NEMOLAUNCH_LLAMA_CPP", "nemolaunch build", "PATH"
    backend: str | None = None  # known for nemolaunch's own builds


def read_stamp(prefix: Path) -> Build | None:
    stamp = prefix / STAMP_NAME
    try:
        text = stamp.read_text()
        built_at = stamp.stat().st_mtime
    except OSError:
        return None
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if "backend" not in values:
        return None
    return Build(prefix=prefix, backend=values["backend"], source=values.get("source", ""), built_at=built_at)


def list_builds(root: Path | None = None) -> list[Build]:
    root = root if root is not None else builds_root()
    if not root.is_dir():
        return []
    builds = [read_stamp(child) for child in sorted(root.iterdir()) if child.is_dir()]
    return [build for build in builds if build is not None]


def machine_backends() -> tuple[str, ...]:
    """Backends this machine can run, best first; a cheap look, no NVML."""
    backends: list[str] = []
    if Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi"):
        backends.append("cuda")
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        backends.append("metal")
    backends.append("cpu")
    return tuple(backends)


def best_build(builds: list[Build], *, binary: str, suitable: tuple[str, ...]) -> Build | None:
    """The build to use: the best suitable backend, and the newest of those."""
    usable = [b for b in builds if b.backend in suitable and _executable(b.bin_dir / binary)]
    if not usable:
        return None
    return min(usable, key=lambda b: (suitable.index(b.backend), -b.built_at))


def find_binary(
    binary: str,
    *,
    explicit_dir: Path | None = None,
    env: dict[str, str] | None = None,
    builds: list[Build] | None = None,
    suitable: tuple[str, ...] | None = None,
) -> Found:
    env = dict(os.environ) if env is None else env
    if explicit_dir is not None:
        return Found(_in_dir(explicit_dir, binary, source="--llama-cpp"), "--llama-cpp")
    if env.get(ENV_DIR):
        return Found(_in_dir(Path(env[ENV_DIR]), binary, source=ENV_DIR), ENV_DIR)
    builds = list_builds() if builds is None else builds
    build = best_build(builds, binary=binary, suitable=suitable or machine_backends())
    if build is not None:
        return Found(build.bin_dir / binary, "nemolaunch build", build.backend)
    on_path = shutil.which(binary, path=env.get("PATH"))
    if on_path:
        return Found(Path(on_path), "PATH")
    raise LlamaCppNotFound(binary=binary, searched=[str(builds_root()), "PATH"])


def _in_dir(folder: Path, binary: str, *, source: str) -> Path:
    folder = folder.expanduser()
    # Accept the build prefix as well as its bin/ folder.
    for candidate in (folder / binary, folder / "bin" / binary):
        if _executable(candidate):
            # Absolute: `--llama-cpp .` must not become the bare name that exec looks up on PATH.
            return candidate.absolute()
    raise LlamaCppDirInvalid(path=str(folder), source=source, binary=binary)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# "version: 0.5.0-dev (build 1, commit 0c1e570)", the older "version: 4567 (0c1e570)", and a tree built
# without git metadata (an sdist, an archive): "version: 0.5.0-dev (build 0, commit unknown)".
_VERSION = re.compile(
    r"version:\s*(?P<number>\S+)\s*\((?:build\s*\d+,\s*)?(?:commit\s*)?(?P<commit>[0-9a-f]{6,40}|unknown)\)"
)


@dataclass(frozen=True)
class BinaryVersion:
    number: str | None
    commit: str | None  # None when the binary does not know it ("commit unknown")
    built_with: str | None
    raw: str

    def label(self) -> str:
        """What is known, in words for a person: never a bare "None"."""
        if self.number is None:
            # The binary's own first line says why ("no answer (...)"), when it is short enough to be one.
            first = self.raw.splitlines()[0] if self.raw else ""
            return f"version unknown ({first})" if first.startswith("no answer") else "version unknown"
        return f"version {self.number} ({self.commit or 'commit unknown'})"


def parse_version(text: str) -> BinaryVersion:
    match = _VERSION.search(text)
    built_with = next((line.strip() for line in text.splitlines() if line.startswith("built with")), None)
    commit = match["commit"] if match else None
    return BinaryVersion(
        number=match["number"] if match else None,
        commit=None if commit == "unknown" else commit,
        built_with=built_with,
        raw=text.strip(),
    )


def binary_version(path: Path, *, timeout_s: float = 20.0) -> BinaryVersion:
    try:
        completed = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        # A binary that will not start, or hangs initialising a GPU: report it, do not crash the report.
        return BinaryVersion(number=None, commit=None, built_with=None, raw=f"no answer ({exc})")
    # llama.cpp prints its version to stderr, after any backend device lines.
    return parse_version(completed.stderr + completed.stdout)


#: The device names llama.cpp gives each GPU backend ("CUDA0", "MTL0"), by nemolaunch's backend names.
_DEVICE_PREFIXES = {"cuda": ("CUDA",), "metal": ("MTL", "Metal")}
_DEVICE_LINE = re.compile(r"^\s+(?P<name>[A-Za-z][\w-]*\d*):\s")


def parse_device_list(text: str) -> tuple[str, ...]:
    """The device names in ``--list-devices`` output (llama.cpp lists every device but the CPU)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Available devices:")
    except StopIteration:
        return ()
    names = []
    for line in lines[start + 1 :]:
        match = _DEVICE_LINE.match(line)
        if match is None:
            break
        names.append(match["name"])
    return tuple(names)


def list_devices(path: Path, *, timeout_s: float = 30.0) -> tuple[str, ...] | None:
    """The devices a llama.cpp binary can use, as it reports them; None when it gives no answer."""
    try:
        completed = subprocess.run(
            [str(path), "--list-devices"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0 or "Available devices:" not in completed.stdout:
        return None
    return parse_device_list(completed.stdout)


def runs_on(devices: tuple[str, ...], backend: str) -> bool:
    """Whether a device list holds a device of a GPU backend ("cuda", "metal")."""
    prefixes = _DEVICE_PREFIXES.get(backend, ())
    return any(name.startswith(prefixes) for name in devices)

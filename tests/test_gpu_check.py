"""scripts/gpu_check.sh: its refusal where there is no NVIDIA GPU, and its honesty where one is faked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, path_without

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"
STEPS = ("gpu", "venv", "build", "doctor", "plan", "serve", "tests", "forecast", "download")


def run_check(*args: str, path: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NEMOLAUNCH_", "LLAMA_"))}
    env["PATH"] = path
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def nvidia_smi(folder: Path, script: str) -> str:
    """A PATH whose nvidia-smi is ``script`` (the driver's tool: the hardware edge), then this machine's tools."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(0o755)
    return f"{folder}:{path_without(folder.parent, 'nvidia-smi')}"


def _refused(result: subprocess.CompletedProcess[str], reason: str, out: Path) -> None:
    assert result.returncode == 4, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gpu_check: no NVIDIA GPU here ({reason}")
    assert lines[0].endswith("): run it on a machine with an NVIDIA GPU and driver")
    assert not out.exists()  # refused before anything was written


def test_refuses_where_there_is_no_nvidia_smi(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_check("--out", str(out), path=path_without(tmp_path, "nvidia-smi"))
    _refused(result, "nvidia-smi not found", out)


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        # What nvidia-smi says, and its exit status, on a machine whose driver sees no GPU.
        ("echo 'No devices were found'; exit 6\n", "nvidia-smi -L failed: No devices were found"),
        ("exit 0\n", "nvidia-smi -L lists no GPU: nothing"),
    ],
    ids=["no-devices", "empty-list"],
)
def test_refuses_where_nvidia_smi_lists_no_gpu(tmp_path: Path, script: str, reason: str) -> None:
    out = tmp_path / "out"
    result = run_check("--out", str(out), path=nvidia_smi(tmp_path / "driver", script))
    _refused(result, reason, out)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--jobs", "0"], "--jobs must be a positive whole number"),
        (["--budget", "soon"], "--budget must be a positive number of seconds"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
        (["--llama-cpp", "/nonexistent"], "holds no llama-server"),
    ],
)
def test_bad_usage_is_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    result = run_check(*args, path=path_without(tmp_path, "nvidia-smi"))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and words in result.stderr


def _venv_of_this_checkout() -> bool:
    python = REPO_ROOT / ".venv" / "bin" / "python"
    if not python.is_file():
        return False
    check = "import pathlib, nemolaunch, pytest; print(pathlib.Path(nemolaunch.__file__).resolve())"
    found = subprocess.run([python, "-c", check], capture_output=True, text=True, check=False).stdout.strip()
    return found.startswith(str(REPO_ROOT / "src"))


def test_a_faked_gpu_never_passes_the_serve_step(tmp_path: Path, llama_bin_dir: Path) -> None:
    """With an nvidia-smi that lists a GPU but never the server, the run says FAIL, and records it all."""
    if not _venv_of_this_checkout():
        pytest.skip("the script reuses this checkout's .venv (scripts/test.sh makes it); it would install one")
    smi = (
        'case "$*" in\n'
        "  -L) echo 'GPU 0: NVIDIA H200 (UUID: GPU-00000000)' ;;\n"
        "  *query-gpu=name*) echo 'NVIDIA H200, 143771 MiB, 580.159.04' ;;\n"
        "  *query-gpu=memory.used*) echo 0 ;;\n"
        "esac\n"
    )
    out = tmp_path / "out"

    result = run_check(
        "--llama-cpp", str(llama_bin_dir), "--skip-tests", "--skip-download", "--out", str(out), "--budget", "300",
        path=nvidia_smi(tmp_path / "driver", smi),
        timeout=400,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout[-3000:]
    table = result.stdout[result.stdout.index("step      status") :].splitlines()
    rows = {line.split()[0]: line for line in table[1 : 1 + len(STEPS)]}
    assert tuple(rows) == STEPS
    assert rows["gpu"].split()[1] == "ok" and "NVIDIA H200" in rows["gpu"]
    assert rows["build"].split()[1] == "ok" and f"given: {llama_bin_dir}" in rows["build"]
    assert rows["serve"].split()[1] == "FAIL" and "not among nvidia-smi's compute apps" in rows["serve"]
    assert rows["tests"].split()[1] == "skipped"
    assert rows["download"].split()[1] == "skipped"
    files = sorted(path.name for path in out.iterdir())
    assert len(files) <= 8 and {"summary.txt", "doctor.json", "plan.json", "serve.log"} <= set(files)
    assert (out / "summary.txt").read_text().endswith(result.stdout[-500:])  # what it printed, it kept

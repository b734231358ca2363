"""`nemolaunch doctor` on this machine's real facts, and `--hardware FILE` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from conftest import NO_GIT_VERSION, cli_env, llama_cpp_shim, run_nemolaunch


def _gpus_seen_here() -> list[dict[str, object]]:
    """The GPUs this machine's own probe sees now (NVML, CUDA_VISIBLE_DEVICES honoured; Metal on a Mac)."""
    from nemolaunch.adapters.hardware_probe import probe_hardware

    return [gpu.model_dump() for gpu in probe_hardware().facts.gpus]


def _no_gpu_driver() -> bool:
    from nemolaunch.adapters.llamacpp import machine_backends

    return machine_backends() == ("cpu",)


def test_doctor_json_is_this_machine_and_reads_back_as_hardware(tmp_path: Path) -> None:
    result = run_nemolaunch("doctor", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert set(facts) == {"os", "arch", "cpu", "memory", "disk", "gpus"}
    assert facts["memory"]["total_bytes"] == psutil.virtual_memory().total
    assert facts["cpu"]["logical_cores"] == psutil.cpu_count()
    # The GPUs are the ones the probe sees in this process; free memory moves, everything else is fixed.
    steady = ("backend", "index", "name", "total_bytes", "compute_capability", "unified")
    here = _gpus_seen_here()
    assert [{key: gpu[key] for key in steady} for gpu in facts["gpus"]] == [
        {key: gpu[key] for key in steady} for gpu in here
    ]
    assert all(0 <= gpu["free_bytes"] <= gpu["total_bytes"] for gpu in facts["gpus"])
    if _no_gpu_driver():
        assert facts["gpus"] == []  # no NVIDIA driver and no Apple GPU: nothing to list
    assert facts["disk"]["free_bytes"] > 0
    recorded = tmp_path / "me.json"
    recorded.write_text(result.stdout)
    again = run_nemolaunch("doctor", "--hardware", str(recorded), "--json")
    assert json.loads(again.stdout) == facts


def test_doctor_table_names_the_build(llama_bin_dir: Path) -> None:
    from nemolaunch.adapters.llamacpp import list_devices

    result = run_nemolaunch("doctor", "--llama-cpp", str(llama_bin_dir), env=cli_env(COLUMNS="400"))
    assert result.returncode == 0, result.stderr
    assert str(llama_bin_dir / "llama-server") in result.stdout
    assert "0c1e570" in result.stdout or "version" in result.stdout
    assert "None" not in result.stdout
    gpus = _gpus_seen_here()
    if gpus:
        assert all(str(gpu["name"]) in result.stdout for gpu in gpus)
    else:
        assert "none (CPU only)" in result.stdout
    # The build's devices, as the build itself answers --list-devices (a CUDA build on a GPU machine
    # lists its GPUs; a CPU build none).
    devices = list_devices(llama_bin_dir / "llama-server")
    assert devices is not None
    line = next(line for line in result.stdout.splitlines() if "llama.cpp devices" in line)
    assert (", ".join(devices) if devices else "CPU only") in line


def test_doctor_shows_what_a_build_without_git_metadata_knows(tmp_path: Path) -> None:
    """A tree built from an archive says "commit unknown": doctor shows the version, never "None"."""
    build = llama_cpp_shim(tmp_path / "bin", devices=("CUDA0: NVIDIA H200 (143155 MiB, 142629 MiB free)",))
    result = run_nemolaunch("doctor", "--llama-cpp", str(build), env=cli_env(COLUMNS="400"))
    assert result.returncode == 0, result.stderr
    assert NO_GIT_VERSION in (build / "llama-server").read_text()
    line = next(line for line in result.stdout.splitlines() if str(build / "llama-server") in line)
    assert "version 0.5.0-dev (commit unknown)" in line and "None" not in line
    assert "CUDA0" in next(line for line in result.stdout.splitlines() if "llama.cpp devices" in line)


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (None, 3, "does not exist"),
        ("{not json", 2, "not JSON"),
        ('{"os": "linux"}', 2, "arch"),
        (
            '{"os": "linux", "arch": "x86_64", "cpu": {}, "memory": {"total_bytes": 1, "available_bytes": 1},'
            ' "gpus": [], "colour": "blue"}',
            2,
            "colour",
        ),
    ],
)
def test_bad_hardware_files(tmp_path: Path, content: str | None, code: int, words: str) -> None:
    path = tmp_path / "machine.json"
    if content is not None:
        path.write_text(content)
    result = run_nemolaunch("plan", "--hardware", str(path), env=cli_env(HF_HUB_OFFLINE="1"))
    assert result.returncode == code
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr


def test_plan_for_a_machine_with_no_memory(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(
        '{"os": "linux", "arch": "x86_64", "cpu": {}, "memory": {"total_bytes": 0, "available_bytes": 0}, "gpus": []}'
    )
    result = run_nemolaunch("plan", "--hardware", str(path), env=cli_env(HF_HUB_OFFLINE="1"))
    assert result.returncode == 6
    assert "Traceback" not in result.stderr

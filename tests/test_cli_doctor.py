"""`nemolaunch doctor` on this machine's real facts, and `--hardware FILE` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from conftest import cli_env, run_nemolaunch


def test_doctor_json_is_this_machine_and_reads_back_as_hardware(tmp_path: Path) -> None:
    result = run_nemolaunch("doctor", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert set(facts) == {"os", "arch", "cpu", "memory", "disk", "gpus"}
    assert facts["memory"]["total_bytes"] == psutil.virtual_memory().total
    assert facts["cpu"]["logical_cores"] == psutil.cpu_count()
    assert facts["gpus"] == []  # no GPU and no NVIDIA driver on this machine or in CI
    assert facts["disk"]["free_bytes"] > 0
    recorded = tmp_path / "me.json"
    recorded.write_text(result.stdout)
    again = run_nemolaunch("doctor", "--hardware", str(recorded), "--json")
    assert json.loads(again.stdout) == facts


def test_doctor_table_names_the_build(llama_bin_dir: Path) -> None:
    result = run_nemolaunch("doctor", "--llama-cpp", str(llama_bin_dir), env=cli_env(COLUMNS="400"))
    assert result.returncode == 0, result.stderr
    assert str(llama_bin_dir / "llama-server") in result.stdout
    assert "0c1e570" in result.stdout or "version" in result.stdout
    assert "none (CPU only)" in result.stdout
    devices = next(line for line in result.stdout.splitlines() if "llama.cpp devices" in line)
    assert "CPU only" in devices  # what the build itself answered to --list-devices


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

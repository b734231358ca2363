"""The speed-forecast benchmark runs end to end on its smallest input (a smoke test: no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, cli_env

pytestmark = pytest.mark.llama


def test_speed_vs_forecast_smoke(llama_bin_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "speed_vs_forecast.py"), "--llama-cpp", str(llama_bin_dir),
         "--sizes", "0.02", "--runs", "1", "--tokens", "4", "--models", str(tmp_path), "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=cli_env(), stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| scaled-")]
    # One row per weight type the benchmark compares (its default: F32, F16, Q8_0 and Q4_0).
    assert [row.split("|")[2].strip() for row in rows] == ["F32", "F16", "Q8_0", "Q4_0"]
    for row in rows:
        forecast, measured = (float(cell.split()[0]) for cell in row.split("|")[4:6])
        assert forecast > 0 and measured > 0  # both sides really ran; how close is the benchmark's business

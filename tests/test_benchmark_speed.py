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
    assert len(rows) == 1
    forecast, measured = (float(cell.split()[0]) for cell in rows[0].split("|")[3:5])
    assert forecast > 0 and measured > 0  # both sides really ran; how close they are is the benchmark's business

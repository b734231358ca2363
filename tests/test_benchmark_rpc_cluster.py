"""The RPC cluster benchmark runs end to end on its smallest input (a smoke test: no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, cli_env

pytestmark = pytest.mark.llama


def test_rpc_cluster_benchmark_smoke(llama_bin_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "rpc_cluster.py"), "--llama-cpp", str(llama_bin_dir),
         "--runs", "1", "--tokens", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=cli_env(), stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "2"]
    assert rows[0].split("|")[3].strip() == "1.00"  # the baseline is its own ratio

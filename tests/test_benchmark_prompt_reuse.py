"""The prompt-reuse benchmark runs end to end on its smallest input (a smoke test: no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, cli_env

pytestmark = pytest.mark.llama


def test_prompt_reuse_benchmark_smoke(llama_bin_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "prompt_reuse.py"), "--llama-cpp", str(llama_bin_dir),
         "--runs", "1", "--turns", "3"],
        capture_output=True, text=True, timeout=300, env=cli_env(), stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3  # turns 1 and 2, and the one after the restart
    assert "time to first token" in result.stdout

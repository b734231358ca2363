"""Every benchmark runs end to end on its smallest input through run_all --quick (no speed is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, cli_env

pytestmark = pytest.mark.llama


def test_the_new_benchmarks_run_on_their_smallest_input(llama_bin_dir: Path, tmp_path: Path) -> None:
    env = cli_env(NEMOLAUNCH_LLAMA_CPP=str(llama_bin_dir), HF_HUB_OFFLINE="1")
    # The source scripts/test.sh built from: the no-op rebuild is then that very build's.
    named_source = os.environ.get("NEMOLAUNCH_TEST_LLAMA_CPP_SOURCE")
    source = ["--source", named_source] if named_source else []
    for script, args in (
        ("startup.py", ["--runs", "1"]),
        ("serve_to_health.py", ["--runs", "1", "--sizes", "tiny"]),
        ("serving_sweep.py", ["--size", "0.03", "--runs", "1", "--models", str(tmp_path)]),
        ("build_times.py", ["--runs", "1", *source]),
        ("header_read.py", ["--runs", "1", "--vocab", "2000", "--merges", "4000"]),
    ):
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
            capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (script, done.stderr[-2000:])
        rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
        assert len(rows) >= 2, (script, done.stdout)  # a header and at least one measured row


def test_run_all_names_every_benchmark_script() -> None:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.pop(0)
    scripts = {script for script, _, _ in run_all.BENCHMARKS.values()}
    on_disk = {path.name for path in (REPO_ROOT / "benchmarks").glob("*.py")} - {"run_all.py", "bench_servers.py"}
    assert scripts == on_disk

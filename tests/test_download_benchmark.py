"""benchmarks/download_vs_curl.py runs end to end on its smallest input (its speeds are not judged here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "download_vs_curl.py"


def test_the_download_benchmark_runs_on_its_smallest_input(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the benchmark's baseline is curl, which is not installed here")
    results = tmp_path / "results"
    args = ["--size-mb", "4", "--shards", "2", "--repeats", "1", "--kill-repeats", "1", "--cap-mb-s", "8"]
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), *args, "--kill-seconds", "2", "--results-dir", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (table,) = results.glob("download_vs_curl-*.md")
    text = table.read_text()
    for row in ("curl, one shard at a time", "curl, 2 shards at once", "hf download", "nemolaunch download"):
        assert text.count(f"| {row} |") == 2, row  # plain and capped hub
    assert "nemolaunch, all cached" in text and "kill -9 at half" in text and "- cpus:" in text
    raw = json.loads(table.with_suffix(".json").read_text())
    kill = raw["kills"][0]
    assert 0 <= kill["served"] - kill["total"] < kill["total"]  # resumed, not fetched again from scratch
    assert len(raw["plain"]["nemolaunch download"]) == 1

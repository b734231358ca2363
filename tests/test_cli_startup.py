"""`nemolaunch --help` stays light: the heavy libraries load only when a command needs them."""

from __future__ import annotations

import subprocess
import sys

from conftest import run_nemolaunch

HEAVY = ("huggingface_hub", "pynvml", "openai", "gguf", "numpy", "psutil", "httpx2", "pydantic")


def test_importing_the_cli_loads_no_heavy_library() -> None:
    probe = f"import sys, nemolaunch.cli; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_lists_every_verb() -> None:
    result = run_nemolaunch("--help")
    assert result.returncode == 0
    for verb in ("build", "serve", "run", "plan", "download", "doctor", "tiny-model"):
        assert verb in result.stdout


def test_version() -> None:
    from nemolaunch import __version__

    result = run_nemolaunch("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"nemolaunch {__version__}"

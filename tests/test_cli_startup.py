"""`nemolaunch --help` stays light: the heavy libraries load only when a command needs them."""

from __future__ import annotations

import json
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


def test_each_verb_summary_is_its_commands_first_docstring_line() -> None:
    """`--help` lists verbs from the table without importing them: the table must say what they say."""
    import importlib

    from nemolaunch.cli import VERBS

    for verb in VERBS:
        target = getattr(importlib.import_module(verb.module), verb.attribute)
        text = target.info.help if verb.group else target.__doc__
        assert verb.summary == text.strip().splitlines()[0], verb.name


def cli_modules_loaded_by(argv: list[str], environ: dict[str, str]) -> set[str]:
    """The nemolaunch.cli modules a fresh interpreter has imported after building the app for ``argv``."""
    probe = (
        "import json, sys\n"
        "from nemolaunch.cli import make_app\n"
        f"make_app({argv!r}, {environ!r})\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('nemolaunch.cli.')]))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout))


def test_a_verb_loads_only_its_own_module() -> None:
    loaded = cli_modules_loaded_by(["--debug", "doctor", "--json"], {})
    assert "nemolaunch.cli.doctor" in loaded
    assert not loaded & {
        "nemolaunch.cli.serve",
        "nemolaunch.cli.download",
        "nemolaunch.cli.chat",
        "nemolaunch.cli.build",
    }


def test_completion_sees_every_verb_whole() -> None:
    loaded = cli_modules_loaded_by([], {"_NEMOLAUNCH_COMPLETE": "complete_bash"})
    assert {"nemolaunch.cli.serve", "nemolaunch.cli.chat"} <= loaded

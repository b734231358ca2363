"""`--json` means the same everywhere: exactly one JSON object on stdout and nothing else there (people's
words, warnings and progress go to stderr), for doctor, plan, download, build, serve/run --dry-run and chat.
Shell completion is Typer's, and as light as `--help`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from test_build import fake_llama_cpp_tree

from conftest import REPO_ROOT, cli_env, llama_cpp_shim, run_nemolaunch, write_gguf
from fakehub import FakeHub, fake_hub_fixture  # noqa: F401  (fixture)
from openai_stub import openai_stub

MACHINE = REPO_ROOT / "tests" / "fixtures" / "hardware" / "laptop_64gb.json"


def _one_object(stdout: str) -> dict[str, object]:
    decoder = json.JSONDecoder()
    payload, end = decoder.raw_decode(stdout)
    assert isinstance(payload, dict)
    assert stdout[end:] == "\n", f"something besides the object on stdout: {stdout[end:]!r}"
    return payload


def _doctor(tmp_path: Path) -> list[str]:
    return ["doctor", "--json"]


def _plan_offline(tmp_path: Path) -> list[str]:
    return ["plan", "--hardware", str(MACHINE), "--json"]


def _plan_file(tmp_path: Path) -> list[str]:
    return ["plan", str(write_gguf(tmp_path / "m.gguf")), "--hardware", str(MACHINE), "--json"]


def _build(tmp_path: Path) -> list[str]:
    tree = fake_llama_cpp_tree(tmp_path / "src")
    return [
        "build",
        "--backend",
        "cpu",
        "--source",
        str(tree),
        "--prefix",
        str(tmp_path / "p"),
        "--web-ui",
        "off",
        "--json",
    ]


def _launch(verb: str) -> Callable[[Path], list[str]]:
    def args(tmp_path: Path) -> list[str]:
        shim = llama_cpp_shim(tmp_path / "bin")
        model = write_gguf(tmp_path / "m.gguf")
        # --host 0.0.0.0 without a key warns: the warning must go to stderr, not into the JSON.
        host = ["--host", "0.0.0.0"] if verb == "serve" else []
        return [verb, str(model), "--llama-cpp", str(shim), *host, "--force", "--dry-run", "--json"]

    return args


def _ps(tmp_path: Path) -> list[str]:
    return ["ps", "--json"]


CASES: dict[str, Callable[[Path], list[str]]] = {
    "doctor": _doctor,
    "ps": _ps,
    "plan-offline": _plan_offline,
    "plan-file": _plan_file,
    "build": _build,
    "serve-dry-run": _launch("serve"),
    "run-dry-run": _launch("run"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_json_is_one_object_on_stdout(case: str, tmp_path: Path) -> None:
    env = cli_env(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    result = run_nemolaunch(*CASES[case](tmp_path), env=env, timeout=300)
    assert result.returncode in (0, 6), result.stderr  # 6: nothing fits, and plan still prints its object
    _one_object(result.stdout)


def test_download_json_is_one_object(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo("acme/Small-GGUF", {"Q8_0/Small-Q8_0.gguf": write_gguf(tmp_path / "s.gguf").read_bytes()})
    env = fake_hub.env(tmp_path / "hf")
    result = run_nemolaunch("download", "acme/Small-GGUF:Q8_0", "--hardware", str(MACHINE), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert list(_one_object(result.stdout)["files"]) == ["Q8_0/Small-Q8_0.gguf"]


def test_chat_json_is_one_object() -> None:
    with openai_stub() as (url, _):
        result = run_nemolaunch("chat", "--url", url, "-p", "What is 2+2?", "--json")
    assert result.returncode == 0, result.stderr
    assert _one_object(result.stdout)["choices"][0]["message"]["content"] == "Four."


def test_show_completion_prints_a_bash_script_without_heavy_imports() -> None:
    """`--show-completion bash` prints the script; its variable drives completion, as light as --help."""
    probe = (
        "import atexit, sys\n"
        "heavy = ('huggingface_hub', 'pynvml', 'openai', 'gguf', 'numpy')\n"
        "atexit.register(lambda: print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)), file=sys.stderr))\n"
        "from nemolaunch.cli import main\n"
        "main()\n"
    )

    def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        # Typer finds "the current shell" among the command's parents (shellingham), as when a person types
        # it in bash; bash stays the parent here (the `exit` keeps it from exec'ing), so the test does not
        # depend on where the suite was started (under nohup or CI no shell need be among its parents).
        shell = ["bash", "-c", '"$@"; exit $?', "bash"]
        return subprocess.run(
            [*shell, sys.executable, "-c", probe, *args], capture_output=True, text=True, env=cli_env(**env), timeout=60
        )

    shown = run(["--show-completion", "bash"])
    assert shown.returncode == 0, shown.stderr
    assert "_NEMOLAUNCH_COMPLETE=complete_bash" in shown.stdout
    assert "complete -o default -F _nemolaunch_completion nemolaunch" in shown.stdout
    assert shown.stderr.strip().splitlines()[-1] == "[]"

    completed = run([], _NEMOLAUNCH_COMPLETE="complete_bash", COMP_WORDS="nemolaunch ch", COMP_CWORD="1")
    assert completed.stdout.split() == ["chat"]
    assert completed.stderr.strip().splitlines()[-1] == "[]"

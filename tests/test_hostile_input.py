"""Hostile input (issue 22): files, servers and settings that lie. Each must end in one line and a non-zero
exit, in bounded time and memory, with nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hostile_gguf

from conftest import REPO_ROOT, cli_env, llama_cpp_shim, nemolaunch_argv
from fakehub import FakeHub

MACHINE = REPO_ROOT / "tests" / "fixtures" / "hardware" / "laptop_64gb.json"
#: The issue's bound on a malformed header's peak memory.
PEAK_LIMIT_KB = 200 * 1024
HOSTILE = {
    "huge-array": (hostile_gguf.huge_array, "an array of 1,099,511,627,776 items"),
    "long-string": (hostile_gguf.long_string, "a string of 1,099,511,627,776 bytes"),
    "duplicate-key": (hostile_gguf.duplicate_key, "the key general.name appears twice"),
}


def _run_measured(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run nemolaunch under a Python parent of its own, which reports the child's peak RSS (kB)."""
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, stdin=subprocess.DEVNULL)\n"
        "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(done.returncode)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *nemolaunch_argv(*args)], capture_output=True, text=True, env=env, timeout=60
    )
    *lines, peak = done.stderr.splitlines()
    done.stderr = "\n".join(lines) + "\n"
    return done, int(peak)


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def _no_header_temporaries(tmp: Path) -> None:
    assert not list(tmp.glob("nemolaunch-header-*")), "a header's temporary folder was left behind"


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("verb", ["plan", "serve"])
def test_a_lying_local_header_is_refused_in_one_line(kind: str, verb: str, tmp_path: Path) -> None:
    write, claim = HOSTILE[kind]
    model = write(tmp_path / f"{kind}.gguf")
    args = [verb, str(model)]
    if verb == "serve":
        args += ["--dry-run", "--llama-cpp", str(llama_cpp_shim(tmp_path / "shim"))]
    env = cli_env(TMPDIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    done, peak_kb = _run_measured(args, env)
    assert done.returncode == 8, done.stderr
    line = _one_error_line(done)
    assert line.startswith(f"nemolaunch: error: {model} has a malformed GGUF header ({claim}")
    assert peak_kb < PEAK_LIMIT_KB, f"peak RSS {peak_kb} kB"


@pytest.mark.parametrize("verb", ["plan", "download", "serve"])
def test_a_lying_header_on_the_hub_is_refused_before_any_download(verb: str, tmp_path: Path) -> None:
    model = hostile_gguf.huge_array(tmp_path / "evil.gguf")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with FakeHub() as hub:
        hub.add_repo("acme/Evil-GGUF", {"Q8_0/Evil-Q8_0.gguf": model.read_bytes()})
        env = cli_env(**hub.env(tmp_path / "hf"), TMPDIR=str(scratch))
        args = [verb, "acme/Evil-GGUF", "--hardware", str(MACHINE)]
        if verb == "serve":
            args += ["--dry-run", "--llama-cpp", str(llama_cpp_shim(tmp_path / "shim"))]
        done, peak_kb = _run_measured(args, env)
    assert done.returncode == 8, done.stderr
    line = _one_error_line(done)
    assert line.startswith("nemolaunch: error: acme/Evil-GGUF/Q8_0/Evil-Q8_0.gguf on the Hub has a malformed GGUF")
    assert peak_kb < PEAK_LIMIT_KB, f"peak RSS {peak_kb} kB"
    assert not list((tmp_path / "hf").rglob("*.gguf")), "a shard was downloaded for a header that lies"
    _no_header_temporaries(scratch)


def test_a_real_vocabulary_still_reads(tmp_path: Path) -> None:
    """The bounds refuse lies, not large honest headers (a Nemotron 3 sized vocabulary)."""
    from gguf_headers import write_nemotron_gguf
    from nemolaunch.adapters.gguf_header import read_gguf_header

    header = read_gguf_header(write_nemotron_gguf(tmp_path / "big.gguf", vocab=131_072, merges=1000))
    assert header.token_count == 131_072

"""`nemolaunch serve` / `run` through the real CLI in a subprocess: dry runs and every refusal."""

from __future__ import annotations

import json
import os
import shlex
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from nemolaunch import ULTRA_ALIAS

from conftest import REPO_ROOT, cli_env, free_port, llama_cpp_shim, run_nemolaunch

HARDWARE = REPO_ROOT / "tests" / "fixtures" / "hardware"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


@pytest.fixture
def model(gguf_factory: Callable[..., Path]) -> Path:
    return gguf_factory("NVIDIA-Nemotron-3-Ultra-550B-A55B-UD-Q2_K_XL.gguf", context_length=1048576)


def test_dry_run_prints_the_exact_command(model: Path, llama_bin_dir: Path, port: int) -> None:
    result = run_nemolaunch("serve", "--model", str(model), "--llama-cpp", str(llama_bin_dir), "--dry-run")
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip()
    assert "--temp 1.0 --top-p 0.95 --min-p 0.01 --port 8001 --host 127.0.0.1 --alias " + ULTRA_ALIAS in command
    argv = shlex.split(command)
    assert argv[0] == str(llama_bin_dir / "llama-server")
    assert argv[argv.index("--ctx-size") + 1] == "32768"  # never 0, never the 1M training context
    assert argv[argv.index("--model") + 1] == str(model)
    assert 'base_url="http://127.0.0.1:8001/v1"' in result.stderr
    assert f'model="{ULTRA_ALIAS}"' in result.stderr


def test_dry_run_json_passes_extra_args_and_never_the_key(model: Path, llama_bin_dir: Path, port: int) -> None:
    env = cli_env(NEMOLAUNCH_API_KEY="sk-very-secret-123")
    result = run_nemolaunch(
        "serve", "--model", str(model), "--llama-cpp", str(llama_bin_dir), "--port", str(port),
        "--host", "0.0.0.0", "--ctx-size", "8192", "--temp", "0.6", "--dry-run", "--json",
        "--", "--threads", "4", "--no-webui",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    launch = json.loads(result.stdout)
    argv = launch["command"]
    assert argv[-3:] == ["--threads", "4", "--no-webui"]
    assert argv[argv.index("--temp") + 1] == "0.6"
    assert argv[argv.index("--ctx-size") + 1] == "8192"
    assert launch["env"] == ["LLAMA_API_KEY"]
    assert launch["base_url"] == f"http://127.0.0.1:{port}/v1"
    assert "sk-very-secret-123" not in result.stdout + result.stderr
    assert "without an API key" not in result.stderr


def test_public_bind_without_key_warns(model: Path, llama_bin_dir: Path, port: int) -> None:
    result = run_nemolaunch(
        "serve", "--model", str(model), "--llama-cpp", str(llama_bin_dir), "--host", "0.0.0.0",
        "--port", str(port), "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0
    assert "warning: binding 0.0.0.0 without an API key" in result.stderr


def test_run_dry_run_single_turn(model: Path, llama_bin_dir: Path) -> None:
    result = run_nemolaunch(
        "run", "--model", str(model), "--llama-cpp", str(llama_bin_dir), "--prompt", "Hi there", "-n", "8",
        "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert argv[0] == str(llama_bin_dir / "llama-cli")
    assert argv[argv.index("--prompt") + 1] == "Hi there"
    assert "--single-turn" in argv
    assert "--temp 1.0 --top-p 0.95 --min-p 0.01" in result.stdout


# --- bad input: one clear line, a non-zero exit --------------------------------------------


def test_missing_model(tmp_path: Path) -> None:
    result = run_nemolaunch("serve", "--model", str(tmp_path / "nope.gguf"), "--dry-run")
    assert result.returncode == 3
    assert "nope.gguf does not exist" in _one_error_line(result.stderr)


def test_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a model")
    result = run_nemolaunch("serve", "--model", str(path), "--dry-run")
    assert result.returncode == 2
    assert "is not a GGUF file" in _one_error_line(result.stderr)


def test_truncated_gguf(tmp_path: Path, gguf_factory: Callable[..., Path]) -> None:
    whole = gguf_factory("whole.gguf")
    path = tmp_path / "half.gguf"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = run_nemolaunch("serve", "--model", str(path), "--dry-run")
    assert result.returncode == 8
    assert "damaged or incomplete GGUF" in _one_error_line(result.stderr)


def test_shard_three_of_six_missing(tmp_path: Path, gguf_factory: Callable[..., Path]) -> None:
    for index in (1, 2, 4, 5, 6):
        gguf_factory(f"m-{index:05d}-of-00006.gguf")
    result = run_nemolaunch("serve", "--model", str(tmp_path / "m-00001-of-00006.gguf"), "--dry-run")
    assert result.returncode == 8
    line = _one_error_line(result.stderr)
    assert "6-file split model" in line and "m-00003-of-00006.gguf is missing" in line


def test_port_in_use(model: Path, llama_bin_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = run_nemolaunch("serve", "--model", str(model), "--llama-cpp", str(llama_bin_dir), "--port", str(busy))
    assert result.returncode == 4
    assert f"port {busy} on 127.0.0.1 is already in use" in _one_error_line(result.stderr)


@pytest.mark.parametrize("bad_port", ["0", "70000", "-5"])
def test_port_out_of_range(model: Path, bad_port: str) -> None:
    result = run_nemolaunch("serve", "--model", str(model), "--port", bad_port, "--dry-run")
    assert result.returncode == 2
    assert f"port {bad_port} is out of range" in _one_error_line(result.stderr)


def _no_llama_cpp_anywhere(tmp_path: Path) -> dict[str, str]:
    """A machine with no llama.cpp build at all: no nemolaunch build, nothing on PATH."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return cli_env(XDG_DATA_HOME=str(tmp_path / "data"), PATH=str(empty))


@pytest.mark.parametrize(
    ("command", "bad"),
    [
        ("serve", ["--ctx-size", "0"]),
        ("serve", ["--ctx-size", "2000000"]),
        ("serve", ["--top-p", "1.5"]),
        ("serve", ["--temp", "-1"]),
        ("serve", ["--parallel", "0"]),
        ("serve", ["--port", "0"]),
        ("run", ["--ctx-size", "-4"]),
        ("run", ["--n-predict", "0"]),
    ],
)
def test_bad_numbers(model: Path, tmp_path: Path, command: str, bad: list[str]) -> None:
    """The mistake in the command line is the first thing heard, before any missing llama.cpp."""
    result = run_nemolaunch(command, "--model", str(model), *bad, "--dry-run", env=_no_llama_cpp_anywhere(tmp_path))
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert bad[0] in line or f"port {bad[1]}" in line
    assert "not found" not in result.stderr


def test_bad_ctx_size_for_a_hub_model_comes_before_the_binary(tmp_path: Path) -> None:
    result = run_nemolaunch(
        "serve", "acme/Model-GGUF:Q4_K_M", "--ctx-size", "0", "--dry-run", env=_no_llama_cpp_anywhere(tmp_path)
    )
    assert result.returncode == 2
    assert "--ctx-size 0 is not valid" in _one_error_line(result.stderr)


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid"])
def test_a_host_that_does_not_resolve_is_refused_before_any_warning(model: Path, tmp_path: Path, host: str) -> None:
    result = run_nemolaunch(
        "serve", "--model", str(model), "--host", host, "--dry-run", env=_no_llama_cpp_anywhere(tmp_path)
    )
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert f"--host {host} does not resolve" in line and "127.0.0.1 or 0.0.0.0" in line
    assert "warning" not in result.stderr  # no API-key warning about a server that never starts


def test_api_key_file_missing_and_readable_by_others(model: Path, llama_bin_dir: Path, tmp_path: Path) -> None:
    result = run_nemolaunch("serve", "--model", str(model), "--api-key-file", str(tmp_path / "key"), "--dry-run")
    assert result.returncode == 3
    assert "--api-key-file" in _one_error_line(result.stderr)

    key = tmp_path / "key"
    key.write_text("sk-file-secret-456\n")
    key.chmod(0o644)
    result = run_nemolaunch(
        "serve", "--model", str(model), "--llama-cpp", str(llama_bin_dir), "--api-key-file", str(key),
        "--host", "0.0.0.0", "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"warning: {key} is readable by other users: chmod 600" in result.stderr
    assert "without an API key" not in result.stderr
    assert f"--api-key-file {key}" in result.stdout
    assert "sk-file-secret-456" not in result.stdout + result.stderr

    key.chmod(0o600)
    quiet = run_nemolaunch(
        "serve", "--model", str(model), "--llama-cpp", str(llama_bin_dir), "--api-key-file", str(key), "--dry-run"
    )
    assert "readable by other users" not in quiet.stderr

    key.write_text("\n")
    empty = run_nemolaunch("serve", "--model", str(model), "--api-key-file", str(key), "--dry-run")
    assert empty.returncode == 2
    assert "is empty" in _one_error_line(empty.stderr)


def test_no_llama_server_found(model: Path, tmp_path: Path) -> None:
    result = run_nemolaunch("serve", "--model", str(model), "--dry-run", env=_no_llama_cpp_anywhere(tmp_path))
    assert result.returncode == 3
    line = _one_error_line(result.stderr)
    assert "llama-server not found" in line and "nemolaunch build" in line


def test_llama_cpp_dir_without_binary(model: Path, tmp_path: Path) -> None:
    env = cli_env(NEMOLAUNCH_LLAMA_CPP=str(tmp_path))
    result = run_nemolaunch("serve", "--model", str(model), "--dry-run", env=env)
    assert result.returncode == 3
    assert "NEMOLAUNCH_LLAMA_CPP names" in _one_error_line(result.stderr)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_nemolaunch("--debug", "serve", "--model", str(tmp_path / "nope.gguf"))
    assert result.returncode == 3
    assert "Traceback" in result.stderr and "ModelFileMissing" in result.stderr


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--", "--port", "9"], "use nemolaunch's own --port"),
        (["--", "-c", "99"], "use nemolaunch's own --ctx-size"),
        (["--", "--api-key", "sk-in-argv"], "use --api-key-file FILE or NEMOLAUNCH_API_KEY, not argv"),
        (["--prot", "18001"], "nemolaunch has no such option"),
        (["--temp", "nan"], "--temp nan is not valid"),
        (["--alias", ""], "--alias '' is not valid"),
    ],
)
def test_passthrough_and_option_mistakes(model: Path, extra: list[str], words: str) -> None:
    result = run_nemolaunch("serve", str(model), "--dry-run", *extra)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert words in line
    assert "sk-in-argv" not in result.stdout + result.stderr


def test_local_model_too_big_for_the_machine(model: Path, tmp_path: Path, llama_bin_dir: Path) -> None:
    tiny_machine = tmp_path / "tiny.json"
    tiny_machine.write_text(
        '{"os": "linux", "arch": "x86_64", "cpu": {}, "memory": {"total_bytes": 1000000, "available_bytes": 500000},'
        ' "gpus": []}'
    )
    refused = run_nemolaunch("serve", str(model), "--hardware", str(tiny_machine), "--dry-run")
    assert refused.returncode == 6
    assert "does not fit" in _one_error_line(refused.stderr) and "--force" in refused.stderr
    forced = run_nemolaunch(
        "serve", str(model), "--hardware", str(tiny_machine), "--force", "--llama-cpp", str(llama_bin_dir), "--dry-run"
    )
    assert forced.returncode == 0 and "launching anyway (--force)" in forced.stderr
    quant = run_nemolaunch("serve", str(model), "--quant", "Q4_K_M", "--dry-run")
    assert quant.returncode == 2 and "not of a local file" in quant.stderr


def test_messages_print_brackets_as_they_are(tmp_path: Path) -> None:
    """A path or alias with "[red]" or "[/]" is data, not a style tag: printed as is, never a crash."""
    result = run_nemolaunch("serve", "--model", str(tmp_path / "a[red]b[/].gguf"), "--dry-run")
    assert result.returncode == 3
    assert "a[red]b[/].gguf does not exist" in _one_error_line(result.stderr)


def test_relative_llama_cpp_folder_runs_that_binary(model: Path, llama_bin_dir: Path) -> None:
    result = run_nemolaunch("serve", str(model), "--llama-cpp", ".", "--dry-run", cwd=llama_bin_dir)
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout)[0] == str(llama_bin_dir / "llama-server")  # absolute, never a PATH lookup


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--json"], "add --dry-run to print the launch as JSON"),
        (["--dry-run", "--", "-hf", "someone/Other-GGUF"], "use nemolaunch's own --model REPO:QUANT"),
    ],
)
def test_json_needs_dry_run_and_no_model_swaps(model: Path, extra: list[str], words: str) -> None:
    result = run_nemolaunch("serve", str(model), *extra)
    assert result.returncode == 2
    assert words in _one_error_line(result.stderr)


# --- a CPU-only llama.cpp on a GPU machine ----------------------------------------------------------------
def _with_nvidia_driver(tmp_path: Path) -> dict[str, str]:
    """This machine as nemolaunch's cheap look sees a GPU machine: an nvidia-smi on PATH (the hardware edge)."""
    shims = tmp_path / "driver-bin"
    shims.mkdir()
    smi = shims / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    return cli_env(PATH=f"{shims}:{os.environ['PATH']}")


def _cpu_only_build(tmp_path: Path) -> Path:
    """A llama.cpp that lists no device besides the CPU, whatever build this machine has (a CUDA one, say)."""
    return llama_cpp_shim(tmp_path / "cpu-only-bin")


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_cpu_only_llama_cpp_on_a_gpu_machine_is_named(command: str, model: Path, tmp_path: Path) -> None:
    cpu_only = _cpu_only_build(tmp_path)
    base = [command, "--model", str(model), "--llama-cpp", str(cpu_only), "--dry-run"]

    # The build is asked (--list-devices), not guessed: it answers with no device besides the CPU.
    env = _with_nvidia_driver(tmp_path)
    on_gpu_machine = run_nemolaunch(*base, env=env)
    chose_devices = run_nemolaunch(*base, "--", "-ngl", "0", env=env)

    assert on_gpu_machine.returncode == 0, on_gpu_machine.stderr
    binary = cpu_only / ("llama-server" if command == "serve" else "llama-cli")
    warning = f"warning: this machine has an NVIDIA GPU driver, but {binary} lists no CUDA device: the model would run"
    assert warning in on_gpu_machine.stderr
    assert "nemolaunch build --backend cuda" in on_gpu_machine.stderr
    assert chose_devices.returncode == 0 and "CPU alone" not in chose_devices.stderr


def test_a_cuda_build_on_a_gpu_machine_is_not_named(model: Path, tmp_path: Path) -> None:
    cuda = llama_cpp_shim(tmp_path / "cuda-bin", devices=("CUDA0: NVIDIA H200 (143155 MiB, 142629 MiB free)",))
    result = run_nemolaunch(
        "serve", "--model", str(model), "--llama-cpp", str(cuda), "--dry-run", env=_with_nvidia_driver(tmp_path)
    )
    assert result.returncode == 0 and "CPU alone" not in result.stderr, result.stderr


def test_no_gpu_warning_on_a_machine_without_one(model: Path, llama_bin_dir: Path) -> None:
    from nemolaunch.adapters.llamacpp import machine_backends

    if machine_backends()[0] != "cpu":
        pytest.skip("this machine has a GPU driver")
    # A port of its own: a server of this machine's user on the default 8001 would add a warning of its own.
    result = run_nemolaunch(
        "serve", "--model", str(model), "--port", str(free_port()), "--llama-cpp", str(llama_bin_dir), "--dry-run"
    )
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


def test_plan_names_a_cpu_only_llama_cpp_before_any_download(tmp_path: Path) -> None:
    cpu_only = _cpu_only_build(tmp_path)
    env = _with_nvidia_driver(tmp_path) | {
        "NEMOLAUNCH_LLAMA_CPP": str(cpu_only),
        "HF_HUB_OFFLINE": "1",  # the built-in Ultra figures: no Hub needed
        "HF_HOME": str(tmp_path / "hf"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    argv = ["plan", "--quant", "UD-IQ1_S", "--force", "--json"]

    here = run_nemolaunch(*argv, env=env)
    elsewhere = run_nemolaunch(*argv, "--hardware", str(HARDWARE / "b200x4.json"), env=env)

    assert "lists no CUDA device: the model would run on the CPU alone" in here.stderr, here.stderr
    assert json.loads(here.stdout)["command"][0] == str(cpu_only / "llama-server")
    # Planning for another machine says nothing about this one's build.
    assert "CPU alone" not in elsewhere.stderr and json.loads(elsewhere.stdout)["command"][0] == "llama-server"

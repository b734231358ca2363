"""A real llama.cpp RPC cluster on loopback: two `nemolaunch rpc-worker`s and `nemolaunch serve --rpc`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import cli_env, free_port, nemolaunch_argv, run_nemolaunch
from test_smoke import process_alive, stop_with_sigint, wait_for_health

pytestmark = pytest.mark.llama


def start_worker(llama_bin_dir: Path, port: int, *extra: str, llama_cache: Path | None = None) -> subprocess.Popen[str]:
    # The tensor cache is on by default: a test's own folder, never this user's.
    env = cli_env(LLAMA_CACHE=str(llama_cache)) if llama_cache is not None else cli_env()
    process = subprocess.Popen(
        nemolaunch_argv("rpc-worker", "--port", str(port), "--llama-cpp", str(llama_bin_dir), *extra),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"rpc-worker exited with {process.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"rpc-worker did not listen on {port} within 60 s")


@pytest.fixture
def two_workers(llama_bin_dir: Path, tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[str], int]]]:
    workers = []
    try:
        for extra in (("--no-cache",), ()):
            port = free_port()
            workers.append((start_worker(llama_bin_dir, port, *extra, llama_cache=tmp_path / "llama-cache"), port))
        yield workers
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_serve_spreads_the_tiny_model_over_two_workers_and_ctrl_c_leaves_nothing(
    tiny_model: Path, llama_bin_dir: Path, two_workers: list[tuple[subprocess.Popen[str], int]], tmp_path: Path
) -> None:
    from openai import OpenAI

    # Each worker exec'd llama.cpp's rpc-server, with this machine's physical cores for its CPU device.
    for process, port in two_workers:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")
        assert Path(cmdline[0]).name == "rpc-server"
        assert cmdline[cmdline.index("--port") + 1] == str(port)
        assert cmdline[cmdline.index("--threads") + 1] == str(psutil.cpu_count(logical=False) or 1)
    # The cache is on unless refused, in the folder rpc-worker named (LLAMA_CACHE, handed to rpc-server).
    refused, default = (
        Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0") for process, _ in two_workers
    )
    assert "--cache" in default and "--cache" not in refused
    environ = Path(f"/proc/{two_workers[1][0].pid}/environ").read_bytes().decode().split("\0")
    assert f"LLAMA_CACHE={tmp_path / 'llama-cache'}" in environ

    endpoints = [f"127.0.0.1:{port}" for _, port in two_workers]
    port = free_port()
    server = subprocess.Popen(
        nemolaunch_argv(
            "serve", str(tiny_model), "--port", str(port), "--llama-cpp", str(llama_bin_dir),
            "--rpc", ",".join(endpoints), "--", "--threads", "1", "-lv", "4",
        ),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        wait_for_health(port, server)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
        assert Path(cmdline[0]).name == "llama-server"
        assert cmdline[cmdline.index("--rpc") + 1] == ",".join(endpoints)

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed")
        reply = client.chat.completions.create(
            model=tiny_model.stem, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
    finally:
        notes = stop_with_sigint(server)
    log = server.stdout.read() if server.stdout else ""
    assert server.returncode is not None and not process_alive(server.pid), notes
    # nemolaunch said which workers it found before launching ...
    for endpoint in endpoints:
        assert re.search(rf"RPC worker {re.escape(endpoint)}: RPC\d \S+ GB free", log), log[-3000:]
    # ... and llama.cpp put weights on both of them (its load_tensors lines name each worker's buffer).
    for endpoint in endpoints:
        assert re.search(rf"RPC\d\[{re.escape(endpoint)}\] model buffer size = +[0-9.]+ MiB", log), log[-3000:]

    for process, _ in two_workers:
        notes = stop_with_sigint(process)
        assert process.returncode is not None and not process_alive(process.pid), notes


def test_plan_asks_live_workers_and_counts_loopback_ones_once(
    llama_bin_dir: Path, two_workers: list[tuple[subprocess.Popen[str], int]]
) -> None:
    endpoints = ",".join(f"127.0.0.1:{port}" for _, port in two_workers)
    result = run_nemolaunch(
        "plan", "--rpc", endpoints, "--json",
        env=cli_env(HF_HUB_OFFLINE="1", NEMOLAUNCH_LLAMA_CPP=str(llama_bin_dir)),
    )  # fmt: skip
    assert result.returncode in (0, 6), result.stderr
    data = json.loads(result.stdout)
    assert [worker["endpoint"] for worker in data["workers"]] == endpoints.split(",")
    total = psutil.virtual_memory().total
    for worker in data["workers"]:
        assert worker["on_this_machine"] is True
        # llama.cpp's CPU device reports this machine's whole RAM, in MiB, as free.
        assert worker["devices"][0]["total_bytes"] == total // 2**20 * 2**20
        assert worker["devices"][0]["free_bytes"] == worker["devices"][0]["total_bytes"]
    assert data["budget"]["worker_bytes"] == 0  # this machine's memory, counted once
    assert any("counted once" in warning for warning in data["warnings"])


def test_a_port_where_nothing_listens_is_one_line_before_anything_loads(tiny_model: Path, llama_bin_dir: Path) -> None:
    dead = free_port()
    result = run_nemolaunch(
        "serve", str(tiny_model), "--rpc", f"127.0.0.1:{dead}", "--llama-cpp", str(llama_bin_dir), "--port",
        str(free_port()),
    )  # fmt: skip
    assert result.returncode == 4
    assert result.stderr.strip().splitlines()[-1] == (
        f"nemolaunch: error: RPC worker 127.0.0.1:{dead} is unreachable (connection refused): start "
        "`nemolaunch rpc-worker --host <its address>` there, or leave it out of --rpc"
    )
    assert "#0" not in result.stderr and "backtrace" not in result.stderr.lower()


def test_a_worker_killed_beforehand_is_named(tiny_model: Path, llama_bin_dir: Path) -> None:
    port = free_port()
    worker = start_worker(llama_bin_dir, port)
    worker.kill()
    worker.wait(timeout=10)
    result = run_nemolaunch(
        "run", str(tiny_model), "--rpc", f"127.0.0.1:{free_port()},127.0.0.1:{port}", "--prompt", "hi",
        "--llama-cpp", str(llama_bin_dir),
    )  # fmt: skip
    assert result.returncode == 4
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and "is unreachable" in errors[0], result.stderr


def test_a_busy_worker_is_named_not_waited_on_forever(
    tiny_model: Path, llama_bin_dir: Path, two_workers: list[tuple[subprocess.Popen[str], int]]
) -> None:
    """rpc-server serves one head at a time: a second head's device list hangs, so it is bounded."""
    from nemolaunch.adapters.rpc_probe import probe_workers
    from nemolaunch.core.cluster import parse_endpoints
    from nemolaunch.errors import RpcWorkerFailed

    _, port = two_workers[0]
    head_port = free_port()
    head = subprocess.Popen(
        [str(llama_bin_dir / "llama-server"), "-m", str(tiny_model), "--rpc", f"127.0.0.1:{port}",
         "--port", str(head_port), "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_health(head_port)
        with pytest.raises(RpcWorkerFailed) as caught:
            probe_workers(llama_bin_dir / "llama-server", parse_endpoints(f"127.0.0.1:{port}"), timeout_s=3)
        assert "one head at a time" in str(caught.value)
    finally:
        head.kill()
        head.wait(timeout=10)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--rpc", "127.0.0.1:"], 2, "port after ':' is missing"),
        (["--rpc", "10.0.0.2:50052,10.0.0.2"], 2, "named twice"),
        (["--", "--rpc", "127.0.0.1:50052"], 2, "--rpc after -- is not valid"),
    ],
)
def test_malformed_workers_are_refused_before_anything_runs(
    tiny_model: Path, llama_bin_dir: Path, args: list[str], code: int, words: str
) -> None:
    result = run_nemolaunch("serve", str(tiny_model), "--llama-cpp", str(llama_bin_dir), *args)
    assert result.returncode == code
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr


def test_rpc_worker_refuses_a_port_in_use_and_warns_off_loopback(llama_bin_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = run_nemolaunch("rpc-worker", "--port", str(taken), "--llama-cpp", str(llama_bin_dir))
    assert result.returncode == 4
    assert result.stderr.strip().splitlines()[-1].endswith(f"port {taken} on 127.0.0.1 is already in use: "
                                                           "stop what holds it or pass another --port")  # fmt: skip
    wide = run_nemolaunch(
        "rpc-worker", "--host", "0.0.0.0", "--port", str(free_port()), "--llama-cpp", str(llama_bin_dir), "--dry-run"
    )
    assert wide.returncode == 0, wide.stderr
    assert "no authentication and no encryption" in wide.stderr and "trusted network" in wide.stderr
    assert "nemolaunch serve --rpc" in wide.stderr
    env = cli_env(LLAMA_CACHE=str(tmp_path))
    loop = run_nemolaunch("rpc-worker", "--llama-cpp", str(llama_bin_dir), "--dry-run", "--threads", "3", env=env)
    assert loop.returncode == 0, loop.stderr
    assert "no authentication" not in loop.stderr
    assert loop.stdout.split()[1:] == ["--host", "127.0.0.1", "--port", "50052", "--threads", "3", "--cache"]
    # The folder it names is the one rpc-server -c uses: $LLAMA_CACHE/rpc here.
    assert f"tensor cache: {tmp_path / 'rpc'} (empty;" in loop.stderr
    refused = run_nemolaunch("rpc-worker", "--llama-cpp", str(llama_bin_dir), "--dry-run", "--no-cache", env=env)
    assert refused.returncode == 0 and "--cache" not in refused.stdout.split()
    assert "tensor cache" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--threads", "0"], "--threads 0 is not valid"),
        (["--device", "NOPE0"], "--device NOPE0 is not valid: this llama.cpp has"),
        (["--device", ","], "name devices such as CUDA0,CPU"),
        (["--host", "999.1.1.1"], "does not resolve"),
        (["--port", "70000"], "port 70000 is out of range"),  # the last --port wins
        (["--json"], "--json without --dry-run"),
    ],
)
def test_rpc_worker_bad_options(llama_bin_dir: Path, args: list[str], words: str) -> None:
    # A port of the test's own: the default one may be another worker's on this machine.
    result = run_nemolaunch("rpc-worker", "--llama-cpp", str(llama_bin_dir), "--port", str(free_port()), *args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr


def test_rpc_worker_names_a_cpu_only_build_on_a_gpu_machine(tmp_path: Path) -> None:
    """The same warning serve gives: asked of the llama-server built beside rpc-server, not guessed."""
    import os

    from conftest import llama_cpp_shim

    cpu_only = llama_cpp_shim(tmp_path / "cpu-only-bin")
    worker = cpu_only / "rpc-server"
    worker.write_text("#!/bin/sh\nexit 1\n")
    worker.chmod(0o755)
    driver = tmp_path / "driver-bin"
    driver.mkdir()
    (driver / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    (driver / "nvidia-smi").chmod(0o755)
    on_gpu = cli_env(PATH=f"{driver}:{os.environ['PATH']}")
    result = run_nemolaunch("rpc-worker", "--llama-cpp", str(cpu_only), "--dry-run", env=on_gpu)
    assert result.returncode == 0, result.stderr
    assert f"{cpu_only / 'llama-server'} lists no CUDA device" in result.stderr
    chose = run_nemolaunch("rpc-worker", "--llama-cpp", str(cpu_only), "--dry-run", "--device", "CPU", env=on_gpu)
    assert chose.returncode == 0 and "CPU alone" not in chose.stderr

"""`nemolaunch ps`, `stop` and `logs` on real launches: llama-server and rpc-server started by `serve` and
`rpc-worker`, the records they leave, and processes that only look like launches (a pid reused)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from nemolaunch.core.launch_record import (
    LaunchRecord,
    ProcessFacts,
    busy_slots,
    find_targets,
    generation_speed,
    liveness,
    parse_metrics,
)

from conftest import cli_env, free_port, nemolaunch_argv, run_nemolaunch
from test_smoke import process_alive, wait_for_health
from tmux_pane import terminal, wait_until_gone

__all__ = ["terminal"]  # the fixture, imported for pytest


# --- helpers ---------------------------------------------------------------------------------------------
def state_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment with a state folder of this test's own: its records are the test's only."""
    return cli_env(XDG_STATE_HOME=str(tmp_path / "state"), **extra)


def records_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nemolaunch" / "launches"


def ps_json(env: dict[str, str]) -> list[dict[str, object]]:
    result = run_nemolaunch("ps", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["launches"]


def start_serve(model: Path, llama_bin_dir: Path, port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        nemolaunch_argv(
            "serve", str(model), "--port", str(port), "--parallel", "1", "--llama-cpp", str(llama_bin_dir), *extra,
            "--", "--threads", "1",
        ),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def start_worker(llama_bin_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        nemolaunch_argv("rpc-worker", "--port", str(port), "--threads", "1", "--llama-cpp", str(llama_bin_dir)),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"rpc-worker did not listen on {port}: {process.poll()}")


def distinct_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def complete(port: int, tokens: int) -> dict[str, object]:
    """A completion of exactly ``tokens`` tokens (ignore_eos), whatever the random model says."""
    body = {"prompt": "Once upon a time", "n_predict": tokens, "ignore_eos": True, "cache_prompt": False}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def process_started(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


def write_fake_record(state_home: Path, pid: int, **fields: object) -> Path:
    from nemolaunch.adapters.launch_records import write_record

    values: dict[str, object] = {
        "kind": "server", "argv": ["/opt/llama.cpp/bin/llama-server", "--port", "8123"], "host": "127.0.0.1",
        "port": 8123, "alias": "someone-else", "process_started": process_started(pid),
    }  # fmt: skip
    values.update(fields)
    return write_record(LaunchRecord(pid=pid, **values), folder=state_home / "nemolaunch" / "launches")  # type: ignore[arg-type]


@contextmanager
def lookalike(tmp_path: Path, *, sigint: str = "default") -> Iterator[subprocess.Popen[bytes]]:
    """A process whose argv[0] is a llama-server's path (bash's ``exec -a``): what a record names after exec.

    ``sigint``: "default" (it dies of Ctrl-C), "caught" (a handler that does nothing, as a server stuck in a
    long step would seem), or "ignored" (as in a process a shell started in the background: an ignored
    signal stays ignored across exec).
    """
    binary = tmp_path / "bin" / "llama-server"
    program = {
        "default": f"exec -a {binary} sleep 300",
        "ignored": f"trap '' INT; exec -a {binary} sleep 300",
        "caught": f"exec -a {binary} {sys.executable} -c "
        "'import signal, time; signal.signal(signal.SIGINT, lambda *_: None); time.sleep(300)'",
    }[sigint]
    process = subprocess.Popen(["bash", "-c", program], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = Path(f"/proc/{process.pid}/status").read_text()
            caught = int(status.split("SigCgt:")[1].split()[0], 16) & (1 << (signal.SIGINT - 1))
            named = Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(str(binary).encode())
            if named and (sigint != "caught" or caught):
                break
            time.sleep(0.02)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


# --- the judgement itself, on facts set here -------------------------------------------------------------
RECORD = LaunchRecord(
    kind="server", pid=4242, process_started=1_700_000_000.0, argv=["/b/llama-server", "--port", "8001"],
    host="127.0.0.1", port=8001, alias="tiny",
)  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "state"),
    [
        (None, "stale"),  # the pid is gone
        (ProcessFacts(4242, 1_700_000_000.2, ("/b/llama-server", "--port", "8001")), "live"),
        (ProcessFacts(4242, 1_700_000_000.0, ("/b/llama-server",), zombie=True), "stale"),
        (ProcessFacts(4242, 1_700_050_000.0, ("/b/llama-server",)), "stale"),  # reused: started at another time
        (ProcessFacts(4242, 1_700_000_000.0, ("/usr/bin/sleep", "300")), "stale"),  # exec'd another program
        (ProcessFacts(4242, 1_700_000_000.0, ("/venv/bin/python", "-m", "nemolaunch", "serve")), "starting"),
    ],
)
def test_a_record_is_live_only_while_its_own_process_runs(facts: ProcessFacts | None, state: str) -> None:
    assert liveness(RECORD, facts) == state


def test_targets_are_ports_then_pids_then_aliases() -> None:
    other = RECORD.model_copy(update={"pid": 8001, "port": 8002, "alias": "other"})
    records = [RECORD, other]
    assert find_targets(records, "8001") == [RECORD]  # a port before a pid that happens to be 8001
    assert find_targets(records, "8002") == [other]
    assert find_targets(records, "other") == [other]
    assert find_targets(records, "4242") == [RECORD]
    assert find_targets(records, "nobody") == []


def test_what_a_server_says_is_read_from_its_own_words() -> None:
    metrics = "\n".join([
        "# HELP llamacpp:tokens_predicted_total Number of generation tokens processed",
        "# TYPE llamacpp:tokens_predicted_total counter",
        "llamacpp:tokens_predicted_total 3000",
        "llamacpp:tokens_predicted_seconds_total 1.5",
        "llamacpp:predicted_tokens_seconds 0",
    ])  # fmt: skip
    assert generation_speed(parse_metrics(metrics)) == pytest.approx(2000.0)
    assert generation_speed(parse_metrics("llamacpp:tokens_predicted_total 0\n")) is None
    assert busy_slots([{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]) == (1, 2)


# --- real processes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("reuse", ["started-at-another-time", "another-program-now"])
def test_a_reused_pid_is_never_stopped_and_its_record_is_pruned(tmp_path: Path, reuse: str) -> None:
    env = state_env(tmp_path)
    other = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        started = process_started(other.pid)
        # The record of a launch whose pid is now `sleep`'s: started earlier, or (the same start) exec'd since.
        fields = {"process_started": started - 3600} if reuse == "started-at-another-time" else {}
        record = write_fake_record(tmp_path / "state", other.pid, **fields)
        assert ps_json(env) == []
        assert not record.exists(), "a stale record was kept"
        write_fake_record(tmp_path / "state", other.pid, **fields)
        for target in (str(other.pid), "8123", "someone-else"):
            result = run_nemolaunch("stop", target, env=env)
            assert result.returncode in (2, 3), result.stderr
            assert "Traceback" not in result.stderr
        result = run_nemolaunch("stop", str(other.pid), env=env)
        assert f"pid {other.pid} (sleep) was not started by nemolaunch" in result.stderr
        assert run_nemolaunch("stop", "--all", env=env).returncode == 0
        assert process_alive(other.pid), "stop signalled a process that is not a launch"
    finally:
        other.kill()
        other.wait(timeout=10)


def test_a_launch_that_ignores_ctrl_c_gets_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    env = state_env(tmp_path)
    with lookalike(tmp_path, sigint="caught") as process:
        write_fake_record(tmp_path / "state", process.pid, argv=[str(tmp_path / "bin" / "llama-server")])
        [listed] = ps_json(env)
        assert (listed["pid"], listed["port"], listed["alias"]) == (process.pid, 8123, "someone-else")
        assert listed["server"] == {
            "health": listed["server"]["health"], "slots_busy": None, "slots_total": None, "tokens_per_s": None,
        }  # fmt: skip
        assert str(listed["server"]["health"]).startswith("no answer")  # nothing listens on its port
        result = run_nemolaunch("stop", "someone-else", "--grace", "0.5", env=env)
        assert result.returncode == 0, result.stderr
        assert "still running after its grace period: sending SIGTERM" in result.stderr
        assert f"stopped llama-server pid {process.pid} on 127.0.0.1:8123 (someone-else)" in result.stdout
        assert "(SIGINT, SIGTERM)" in result.stdout
        assert process.wait(timeout=10) == -signal.SIGTERM
    assert ps_json(env) == []
    assert list(records_dir(tmp_path).glob("*.json")) == []


def test_a_launch_started_in_the_background_gets_sigterm_at_once(tmp_path: Path) -> None:
    """A shell's `&` or nohup leaves SIGINT ignored: waiting a grace period for it would be waiting for nothing."""
    env = state_env(tmp_path)
    with lookalike(tmp_path, sigint="ignored") as process:
        write_fake_record(tmp_path / "state", process.pid, argv=[str(tmp_path / "bin" / "llama-server")])
        result = run_nemolaunch("stop", str(process.pid), "--grace", "600", env=env)
        assert result.returncode == 0, result.stderr
        assert (
            f"stopping llama-server pid {process.pid} on 127.0.0.1:8123 (someone-else) (SIGTERM: it ignores SIGINT)"
            in result.stderr
        )
        assert "grace period" not in result.stderr
        assert "(SIGTERM)" in result.stdout
        assert process.wait(timeout=10) == -signal.SIGTERM


@pytest.mark.llama
def test_ps_lists_two_servers_and_a_worker_shows_a_busy_slot_and_stop_leaves_nothing(
    tiny_model: Path, llama_bin_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    env = state_env(tmp_path)
    first_port, second_port, worker_port = distinct_ports(3)
    first = start_serve(tiny_model, llama_bin_dir, first_port, env)
    second = start_serve(tiny_model, llama_bin_dir, second_port, env, "--alias", "tiny-b")
    processes += [first, second]
    worker = start_worker(llama_bin_dir, worker_port, env)
    processes.append(worker)
    wait_for_health(first_port, first)
    wait_for_health(second_port, second)

    launches = {row["port"]: row for row in ps_json(env)}
    assert set(launches) == {first_port, second_port, worker_port}
    # The exec kept each pid: the process the test started is the one listed.
    expected = {first_port: ("server", first.pid, tiny_model.stem), second_port: ("server", second.pid, "tiny-b"),
                worker_port: ("rpc-worker", worker.pid, None)}  # fmt: skip
    for port, (kind, pid, alias) in expected.items():
        row = launches[port]
        assert (row["kind"], row["pid"], row["alias"], row["address"]) == (kind, pid, alias, f"127.0.0.1:{port}")
        assert isinstance(row["rss_bytes"], int) and row["rss_bytes"] > 0
        assert row["state"] == "live"
    for port in (first_port, second_port):
        assert launches[port]["server"]["health"] == "ok"
        assert (launches[port]["server"]["slots_busy"], launches[port]["server"]["slots_total"]) == (0, 1)
        assert "--metrics" in launches[port]["command"]
    assert launches[worker_port]["server"] is None
    assert Path(str(launches[worker_port]["command"][0])).name == "rpc-server"

    # A queue of long completions keeps the first server's one slot busy while ps looks.
    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = [pool.submit(complete, first_port, 3000) for _ in range(6)]
        busy_seen = None
        while busy_seen is None and not all(reply.done() for reply in replies):
            rows = {row["port"]: row for row in ps_json(env)}
            if rows[first_port]["server"]["slots_busy"] == 1:
                busy_seen = rows
        assert busy_seen is not None, "ps never saw the busy slot while completions ran"
        assert busy_seen[second_port]["server"]["slots_busy"] == 0
        for reply in replies:
            assert reply.result()["tokens_predicted"] == 3000
    [row] = [row for row in ps_json(env) if row["port"] == first_port]
    assert row["server"]["tokens_per_s"] > 0  # the server's own count of the 18,000 tokens it generated

    shown = run_nemolaunch("ps", env=env)
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)
    for word in (f"127.0.0.1:{first_port}", "tiny-b", "rpc-worker", "ok", "0/1"):
        assert word in shown.stdout

    by_port = run_nemolaunch("stop", str(first_port), env=env)
    assert by_port.returncode == 0, by_port.stderr
    assert f"stopped llama-server pid {first.pid} on 127.0.0.1:{first_port}" in by_port.stdout
    assert first.wait(timeout=10) is not None
    by_alias = run_nemolaunch("stop", "tiny-b", env=env)
    assert by_alias.returncode == 0, by_alias.stderr
    assert f"pid {second.pid} on 127.0.0.1:{second_port} (tiny-b)" in by_alias.stdout
    assert second.wait(timeout=10) is not None
    assert [row["kind"] for row in ps_json(env)] == ["rpc-worker"]
    everything = run_nemolaunch("stop", "--all", env=env)
    assert everything.returncode == 0, everything.stderr
    assert f"stopped rpc-server pid {worker.pid} on 127.0.0.1:{worker_port}" in everything.stdout
    assert worker.wait(timeout=10) is not None
    assert ps_json(env) == []
    assert list(records_dir(tmp_path).glob("*.json")) == []


@pytest.mark.llama
def test_a_record_left_by_a_killed_server_is_pruned(
    tiny_model: Path, llama_bin_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    env = state_env(tmp_path)
    port = free_port()
    server = start_serve(tiny_model, llama_bin_dir, port, env)
    processes.append(server)
    wait_for_health(port, server)
    record = records_dir(tmp_path) / f"{server.pid}.json"
    assert json.loads(record.read_text())["port"] == port
    assert "sk-" not in record.read_text()
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    assert record.exists()  # nothing ran to remove it: kill -9 leaves it behind
    assert ps_json(env) == []
    assert not record.exists()
    result = run_nemolaunch("stop", str(port), env=env)
    assert result.returncode == 3
    assert f"nothing nemolaunch launched matches '{port}' (running: none)" in result.stderr


@pytest.mark.llama
def test_logs_shows_and_follows_a_servers_log_file(
    tiny_model: Path, llama_bin_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    env = state_env(tmp_path)
    port, other_port = distinct_ports(2)
    log = tmp_path / "server.log"
    server = start_serve(tiny_model, llama_bin_dir, port, env, "--log-file", str(log))
    # The other keeps its log in a log_dir named by the setting's variable: a file of its own per launch.
    other = start_serve(tiny_model, llama_bin_dir, other_port, state_env(tmp_path, NEMOLAUNCH_LOG_DIR=str(tmp_path)))
    processes += [server, other]
    wait_for_health(port, server)
    wait_for_health(other_port, other)

    shown = run_nemolaunch("logs", str(port), env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"listening on http://127.0.0.1:{port}" in shown.stdout
    assert shown.stdout.strip().splitlines()[-1] in log.read_text()
    [other_log] = tmp_path.glob(f"server-{other_port}-*.log")
    assert f":{other_port}" in run_nemolaunch("logs", str(other_port), env=env).stdout
    assert f"listening on http://127.0.0.1:{other_port}" in other_log.read_text()
    which = run_nemolaunch("logs", env=env)
    assert which.returncode == 2
    assert "name which launch to show the log of" in which.stderr

    follow = subprocess.Popen(
        nemolaunch_argv("logs", str(port), "-f", "-n", "1"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    processes.append(follow)  # type: ignore[arg-type]
    assert follow.stdout is not None
    first_line = follow.stdout.readline()  # -n 1: the log's last line, then it follows
    assert first_line.strip() in log.read_text()
    complete(port, 8)  # the request's lines reach the file while -f follows it
    stopped = run_nemolaunch("stop", str(port), env=env)
    assert stopped.returncode == 0, stopped.stderr
    out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert "[llama-server pid" in err and "has exited]" in err
    assert "processing task" in out  # the request, logged after -f began
    assert out.strip().splitlines()[-1] in log.read_text()


@pytest.mark.llama
def test_serve_in_one_pane_ps_and_stop_in_another(
    terminal, tiny_model: Path, llama_bin_dir: Path, tmp_path: Path
) -> None:
    import shlex

    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    port = free_port()
    server = terminal(**state)
    serve = nemolaunch_argv("serve", str(tiny_model), "--port", str(port), "--llama-cpp", str(llama_bin_dir))
    server.type_line(shlex.join(serve) + " -- --threads 1")
    wait_for_health(port)
    [llama_server] = server.children()  # the exec: the shell's one child is llama-server itself

    other = terminal(**state)
    other.type_line(shlex.join(nemolaunch_argv("ps")))
    screen = other.wait_for("TOK/S")
    row = next(line for line in screen.splitlines() if f"127.0.0.1:{port}" in line)
    assert row.split()[:4] == ["server", str(llama_server), f"127.0.0.1:{port}", tiny_model.stem], screen
    assert " ok " in row

    other.type_line(shlex.join(nemolaunch_argv("stop", str(port))))
    other.wait_for(f"stopped llama-server pid {llama_server} on 127.0.0.1:{port}")
    assert wait_until_gone(server) == [], server.screen()[-2000:]  # the serving pane is back at its prompt
    other.type_line(shlex.join(nemolaunch_argv("ps")))
    other.wait_for("nothing nemolaunch launched is running")

    # `run` leaves a record too: llama-cli in the first pane, listed and stopped from the second.
    run = nemolaunch_argv("run", str(tiny_model), "--llama-cpp", str(llama_bin_dir))
    server.type_line(shlex.join(run) + " -- --threads 1")
    server.wait_for("/exit or Ctrl+C")
    [llama_cli] = server.children()
    other.type_line(shlex.join(nemolaunch_argv("ps")))
    screen = other.wait_for(f" {llama_cli} ", after="TOK/S")
    row = next(line for line in screen.splitlines() if line.startswith("cli "))
    assert row.split()[:4] == ["cli", str(llama_cli), "-", tiny_model.name], screen
    other.type_line(shlex.join(nemolaunch_argv("stop", str(llama_cli))))
    other.wait_for(f"stopped llama-cli pid {llama_cli}")
    assert wait_until_gone(server) == [], server.screen()[-2000:]
    assert wait_until_gone(other) == []


class RecordedNvml:
    """pynvml's shape, answering from facts set here: two GPUs, the launch on both, another process on one."""

    class NVMLError(Exception):
        pass

    def __init__(self, processes: dict[int, list[tuple[int, int]]]) -> None:
        self.processes = processes  # GPU index -> (pid, bytes)
        self.shut_down = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.processes)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[object]:
        from types import SimpleNamespace

        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes[handle]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[object]:
        raise self.NVMLError("not supported")


def test_gpu_memory_is_per_device_for_the_launches_only() -> None:
    from nemolaunch.adapters.process_memory import gpu_bytes_by_pid

    nvml = RecordedNvml({0: [(4242, 70 * 2**30), (999, 2**30)], 1: [(4242, 30 * 2**30)]})
    assert gpu_bytes_by_pid([4242], nvml=nvml) == {4242: {0: 70 * 2**30, 1: 30 * 2**30}}
    assert nvml.shut_down
    assert gpu_bytes_by_pid([], nvml=nvml) == {}


def test_a_launch_whose_exec_fails_leaves_no_record(tmp_path: Path, tiny_model: Path) -> None:
    """A llama-server whose interpreter does not exist: execve fails after the record is written."""
    shim = tmp_path / "bin"
    shim.mkdir()
    for name in ("llama-server", "llama-cli"):
        (shim / name).write_text("#!/nonexistent/interpreter\n")
        (shim / name).chmod(0o755)
    env = state_env(tmp_path)
    result = run_nemolaunch("serve", str(tiny_model), "--port", str(free_port()), "--llama-cpp", str(shim), env=env)
    assert result.returncode == 4, result.stderr
    assert f"could not start {shim / 'llama-server'} (No such file or directory)" in result.stderr
    assert records_dir(tmp_path).is_dir()  # it was written, then taken back
    assert list(records_dir(tmp_path).iterdir()) == []


@pytest.mark.llama
def test_a_server_that_does_not_answer_is_shown_as_such(
    tiny_model: Path, llama_bin_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    env = state_env(tmp_path, http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # never used
    port = free_port()
    server = start_serve(tiny_model, llama_bin_dir, port, env)
    processes.append(server)
    wait_for_health(port, server)
    [answering] = ps_json(env)
    assert answering["server"]["health"] == "ok"  # straight to the server, not through the proxy
    os.kill(server.pid, signal.SIGSTOP)  # its socket still accepts (the kernel does), nothing replies
    try:
        result = run_nemolaunch("ps", "--json", env=env)
        assert result.returncode == 0, result.stderr
        [row] = json.loads(result.stdout)["launches"]
        assert row["server"]["health"] == "no answer (timed out)"
        assert (row["pid"], row["port"]) == (server.pid, port)
        shown = run_nemolaunch("ps", env=env)
        assert "no answer (timed out)" in " ".join(shown.stdout.split()), shown.stdout
        assert "Traceback" not in result.stderr + shown.stderr
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert run_nemolaunch("stop", str(port), env=env).returncode == 0
    assert server.wait(timeout=10) is not None


@pytest.mark.llama
def test_ps_asks_a_server_with_a_key_using_its_key_file_and_records_no_key(
    tiny_model: Path, llama_bin_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-launch-secret\n")
    key_file.chmod(0o600)
    env = state_env(tmp_path)
    port = free_port()
    server = start_serve(tiny_model, llama_bin_dir, port, env, "--api-key-file", str(key_file))
    processes.append(server)
    wait_for_health(port, server)
    with pytest.raises(urllib.error.HTTPError):  # /slots wants the key
        urllib.request.urlopen(f"http://127.0.0.1:{port}/slots", timeout=10)
    result = run_nemolaunch("ps", "--json", env=env)
    [row] = json.loads(result.stdout)["launches"]
    assert (row["server"]["slots_busy"], row["server"]["slots_total"]) == (0, 1)
    assert "sk-launch-secret" not in result.stdout + result.stderr
    assert "sk-launch-secret" not in (records_dir(tmp_path) / f"{server.pid}.json").read_text()
    assert run_nemolaunch("stop", str(port), env=env).returncode == 0
    assert server.wait(timeout=10) is not None

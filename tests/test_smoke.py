"""The real thing: nemolaunch serve/run exec a real llama.cpp on the tiny Nemotron-architecture model."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from nemolaunch.tiny_model import TINY_MODEL_CONTEXT_LENGTH

from conftest import cli_env, nemolaunch_argv, run_nemolaunch, sigint_default

HEALTH_TIMEOUT_S = 120


def wait_for_health(
    port: int, process: subprocess.Popen[str] | None = None, timeout: float = HEALTH_TIMEOUT_S
) -> float:
    """Seconds until /health answers 200; fails if the server exits first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the server exited with {process.returncode} before /health answered:\n{output[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"/health did not answer within {timeout}s")


def post_json(url: str, payload: object, headers: dict[str, str] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def stop_with_sigint(process: subprocess.Popen[str], *, grace_s: float = 15) -> list[str]:
    """Ctrl-C the server; escalate only after a grace period, and say so."""
    notes: list[str] = []
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
        return notes
    except subprocess.TimeoutExpired:
        notes.append(f"llama-server ignored the first SIGINT for {grace_s}s; sent a second one")
    process.send_signal(signal.SIGINT)  # llama-server exits at once on a second Ctrl-C
    try:
        process.wait(timeout=grace_s)
        return notes
    except subprocess.TimeoutExpired:
        notes.append("llama-server ignored two SIGINTs; killed it")
        process.kill()
        process.wait(timeout=10)
        return notes


def start_serve(model: Path | str, llama_bin_dir: Path, port: int, *, env: dict[str, str]) -> subprocess.Popen[str]:
    """`nemolaunch serve MODEL` on ``port`` with one thread, its output captured."""
    return subprocess.Popen(
        nemolaunch_argv(
            "serve", "--model", str(model), "--port", str(port), "--llama-cpp", str(llama_bin_dir),
            "--", "--threads", "1",
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=sigint_default,
    )  # fmt: skip


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_answers_the_openai_client_and_stops_on_ctrl_c(
    tiny_model: Path, llama_bin_dir: Path, port: int, processes: list[subprocess.Popen[str]]
) -> None:
    from openai import OpenAI

    process = start_serve(tiny_model, llama_bin_dir, port, env=cli_env())
    processes.append(process)
    seconds = wait_for_health(port, process)
    print(f"time to /health: {seconds:.2f}s")

    # nemolaunch exec'd: the process we started *is* llama-server now, so signals reach it directly.
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    assert Path(cmdline[0].decode()).name == "llama-server"
    assert b"--temp" in cmdline and cmdline[cmdline.index(b"--temp") + 1] == b"1.0"
    assert cmdline[cmdline.index(b"--ctx-size") + 1] == str(TINY_MODEL_CONTEXT_LENGTH).encode()

    alias = tiny_model.stem
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed")
    assert [model.id for model in client.models.list().data] == [alias]
    raw = client.chat.completions.with_raw_response.create(
        model=alias, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    reply = raw.parse()
    body = json.loads(raw.text)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert body["timings"]["predicted_n"] == reply.usage.completion_tokens

    rendered = post_json(
        f"http://127.0.0.1:{port}/apply-template",
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    )
    assert rendered["prompt"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )

    notes = stop_with_sigint(process)
    for note in notes:
        warnings.warn(note, stacklevel=1)
    assert not process_alive(process.pid)
    assert process.returncode is not None
    # Nothing is left listening on the port.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_serve_enforces_the_key_from_the_environment(
    tiny_model: Path, llama_bin_dir: Path, port: int, processes: list[subprocess.Popen[str]]
) -> None:
    secret = "sk-test-env-key-789"
    process = start_serve(tiny_model, llama_bin_dir, port, env=cli_env(NEMOLAUNCH_API_KEY=secret))
    processes.append(process)
    wait_for_health(port, process)
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    assert secret.encode() not in cmdline  # the key is not visible to `ps`
    payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with pytest.raises(urllib.error.HTTPError) as refused:
        post_json(f"http://127.0.0.1:{port}/v1/chat/completions", payload)
    assert refused.value.code == 401
    answered = post_json(
        f"http://127.0.0.1:{port}/v1/chat/completions", payload, headers={"Authorization": f"Bearer {secret}"}
    )
    assert answered["choices"]
    stop_with_sigint(process)
    output = process.stdout.read() if process.stdout else ""
    assert secret not in output


def test_run_answers_one_turn_and_exits(tiny_model: Path, llama_bin_dir: Path) -> None:
    result = run_nemolaunch(
        "run", "--model", str(tiny_model), "--llama-cpp", str(llama_bin_dir), "--prompt", "Hello", "-n", "8",
        "--", "--threads", "1",
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # The command goes to stderr, so that stdout is llama-cli's own output. A warning may come first
    # (a CPU build under test on a machine with a GPU driver is named): the command is the line it starts.
    binary = str(llama_bin_dir / "llama-cli")
    command = next(shlex.split(line) for line in result.stderr.splitlines() if line.split(" ", 1)[0] == binary)
    assert "--single-turn" in command
    assert "llama-cli" not in result.stdout.splitlines()[0]
    # llama-cli echoes the prompt and then its (random) answer before exiting.
    assert "Hello" in result.stdout


def _tmux(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def tmux_session(tmp_path: Path):
    if subprocess.run(["which", "tmux"], capture_output=True, check=False).returncode != 0:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    name = f"nemolaunch-test-{os.getpid()}-{time.monotonic_ns()}"
    yield name
    _tmux("kill-session", "-t", name)


def _pane_pid(session: str) -> int:
    return int(_tmux("display-message", "-p", "-t", session, "#{pane_pid}").stdout.strip())


def test_serve_under_tmux_stops_on_ctrl_c(
    tiny_model: Path, llama_bin_dir: Path, port: int, tmux_session: str, tmp_path: Path
) -> None:
    """A person keeping the server up under tmux: Ctrl-C in the pane stops it and leaves nothing behind."""
    command = shlex.join(
        [*nemolaunch_argv("serve", "--model", str(tiny_model), "--port", str(port)),
         "--llama-cpp", str(llama_bin_dir), "--", "--threads", "1"]
    )  # fmt: skip
    env_args = [arg for key, value in cli_env().items() for arg in ("-e", f"{key}={value}")]
    # The pane runs a shell, as a person's would; nemolaunch replaces itself with llama-server inside it.
    started = _tmux("new-session", "-d", "-s", tmux_session, "-x", "200", "-y", "50", *env_args, "bash", "--norc")
    assert started.returncode == 0, started.stderr
    _tmux("send-keys", "-t", tmux_session, command, "Enter")
    wait_for_health(port)
    shell_pid = _pane_pid(tmux_session)
    children = Path(f"/proc/{shell_pid}/task/{shell_pid}/children").read_text().split()
    assert len(children) == 1
    server_pid = int(children[0])
    assert Path(f"/proc/{server_pid}/exe").resolve() == (llama_bin_dir / "llama-server").resolve()
    screen = _tmux("capture-pane", "-p", "-t", tmux_session).stdout
    assert "--temp 1.0 --top-p 0.95 --min-p 0.01" in screen

    _tmux("send-keys", "-t", tmux_session, "C-c")
    deadline = time.monotonic() + 15
    while process_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if process_alive(server_pid):
        warnings.warn("llama-server ignored the first Ctrl-C in tmux; sent a second one", stacklevel=1)
        _tmux("send-keys", "-t", tmux_session, "C-c")
        deadline = time.monotonic() + 15
        while process_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not process_alive(server_pid)
    # The shell prompt is back: the pane is usable again.
    assert process_alive(shell_pid)


def test_run_is_interactive_in_a_terminal(tiny_model: Path, llama_bin_dir: Path, tmux_session: str) -> None:
    """`nemolaunch run` is a real chat in a terminal: it takes a line, answers, and exits on /exit."""
    command = shlex.join(
        [*nemolaunch_argv("run", "--model", str(tiny_model), "--llama-cpp", str(llama_bin_dir), "-n", "8"),
         "--", "--threads", "1"]
    )  # fmt: skip
    env_args = [arg for key, value in cli_env().items() for arg in ("-e", f"{key}={value}")]
    started = _tmux("new-session", "-d", "-s", tmux_session, "-x", "200", "-y", "50", *env_args, "bash", "--norc")
    assert started.returncode == 0, started.stderr
    _tmux("send-keys", "-t", tmux_session, command, "Enter")
    shell_pid = _pane_pid(tmux_session)

    def screen() -> str:
        return _tmux("capture-pane", "-p", "-S", "-200", "-t", tmux_session).stdout

    deadline = time.monotonic() + 60
    while "> " not in screen().split("llama-cli", 1)[-1] and time.monotonic() < deadline:
        time.sleep(0.3)
    children = Path(f"/proc/{shell_pid}/task/{shell_pid}/children").read_text().split()
    assert len(children) == 1
    cli_pid = int(children[0])
    assert Path(f"/proc/{cli_pid}/exe").resolve() == (llama_bin_dir / "llama-cli").resolve()
    _tmux("send-keys", "-t", tmux_session, "What is two plus two?", "Enter")
    deadline = time.monotonic() + 60
    while "Generation:" not in screen() and time.monotonic() < deadline:
        time.sleep(0.3)
    answered = screen().split("> What is two plus two?", 1)
    assert len(answered) == 2, screen()[-2000:]
    assert "Generation:" in answered[1]  # llama-cli answered and reported its speed
    _tmux("send-keys", "-t", tmux_session, "/exit", "Enter")
    deadline = time.monotonic() + 20
    while process_alive(cli_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_alive(cli_pid), screen()[-2000:]


def test_serve_into_a_dead_pipe_under_an_ignored_sigint_stops_on_ctrl_c(
    tiny_model: Path, llama_bin_dir: Path, port: int
) -> None:
    """`nemolaunch serve ... | tee log` started where SIGINT is ignored (nohup, `( ... ) &`): the reader dies
    first, the server keeps writing into the dead pipe, then Ctrl-C reaches the pipeline's process group.

    bash's ``trap "" INT`` hands SIGINT down ignored, as such a parent does. A loaded llama-server sets its
    own SIGINT handler and ignores SIGPIPE itself (tools/server/server.cpp), so this holds by llama-server's
    own doing; the Ctrl-C *while loading* under an ignored SIGINT, which only nemolaunch's exec can fix, is
    test_error_catalog's test_a_ctrl_c_row_holds_under_a_parent_that_ignores_sigint.
    """
    serve = nemolaunch_argv(
        "serve", "--model", str(tiny_model), "--port", str(port), "--llama-cpp", str(llama_bin_dir),
        "--", "--threads", "1",
    )  # fmt: skip
    read_end, write_end = os.pipe()
    # Its own process group, as a terminal gives a pipeline; the reader joins it below.
    server = subprocess.Popen(
        ["bash", "-c", 'trap "" INT; exec "$@"', "bash", *serve],
        stdout=write_end, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=cli_env(), process_group=0,
    )  # fmt: skip
    reader = subprocess.Popen(["cat"], stdin=read_end, stdout=subprocess.DEVNULL, process_group=server.pid)
    os.close(read_end)
    os.close(write_end)
    try:
        wait_for_health(port, None)
        assert Path(f"/proc/{server.pid}/exe").resolve().name == "llama-server"
        reader.kill()  # the `tee` of the pipeline is gone; what the server logs now meets a dead pipe
        reader.wait(timeout=10)
        post_json(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )  # a request makes it log into that pipe
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the terminal sends it: to the whole group
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("llama-server outlived Ctrl-C after the reader of its output died")
        assert not process_alive(server.pid)
    finally:
        for process in (server, reader):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

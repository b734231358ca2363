"""`nemolaunch chat` against a real llama-server serving the scripted model (exact thinking and answer),
and against an OpenAI-compatible stub for what llama-server cannot be made to do on cue."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nemolaunch.scripted_model import write_scripted_model

from conftest import cli_env, free_port, nemolaunch_argv, run_nemolaunch, sigint_default
from openai_stub import StubBehaviour, openai_stub
from test_smoke import process_alive, start_serve, stop_with_sigint, wait_for_health

SECRET = "sk-chat-test-4711"
SCRIPT = ["Let me think.", "</think>", "Hello there!", "<|im_end|>"]


@pytest.fixture(scope="module")
def scripted_server(llama_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The scripted model behind `nemolaunch serve`, with an API key: its base URL."""
    model = write_scripted_model(tmp_path_factory.mktemp("chat") / "scripted.gguf", SCRIPT)
    port = free_port()
    process = start_serve(model, llama_bin_dir, port, env=cli_env(NEMOLAUNCH_API_KEY=SECRET))
    wait_for_health(port, process)
    yield f"http://127.0.0.1:{port}/v1"
    stop_with_sigint(process)
    assert not process_alive(process.pid)


def chat(*args: str, key: str | None = SECRET, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = cli_env(**({"NEMOLAUNCH_API_KEY": key} if key else {}))
    return subprocess.run(
        nemolaunch_argv("chat", *args), input=stdin or "", capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.llama
def test_one_prompt_prints_the_answer_on_stdout_and_the_thinking_apart(scripted_server: str) -> None:
    result = chat("--url", scripted_server, "-p", "What is 2+2?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello there!\n"  # only the answer: `answer=$(nemolaunch chat -p ...)` works
    assert "Let me think." in result.stderr
    assert "tokens/s]" in result.stderr and "measured here" not in result.stderr  # the server's own timings

    hidden = chat("--url", scripted_server, "-p", "What is 2+2?", "--hide-thinking")
    assert hidden.stdout == "Hello there!\n" and "Let me think." not in hidden.stderr


@pytest.mark.llama
def test_stdin_that_is_not_a_terminal_is_the_prompt(scripted_server: str) -> None:
    result = chat("--url", scripted_server.removesuffix("/v1"), stdin="What is 2+2?\n")  # a bare address gets /v1
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello there!\n"


@pytest.mark.llama
def test_json_is_the_raw_response_alone(scripted_server: str) -> None:
    result = chat("--url", scripted_server, "-p", "What is 2+2?", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)  # one object, nothing else on stdout
    message = body["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("Hello there!", "Let me think.")
    assert body["model"] == "scripted" and body["timings"]["predicted_n"] == body["usage"]["completion_tokens"]


@pytest.mark.llama
def test_the_key_comes_from_a_file_and_never_shows(scripted_server: str, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    key_file.chmod(0o600)
    result = chat("--url", scripted_server, "-p", "hi", "--api-key-file", str(key_file), key=None)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    raw = chat("--url", scripted_server, "-p", "hi", "--json")
    assert SECRET not in raw.stdout


@pytest.mark.llama
@pytest.mark.parametrize(
    ("key", "model", "code", "message"),
    [
        (None, None, 2, "wants an API key: pass --api-key-file FILE or set NEMOLAUNCH_API_KEY"),
        ("sk-wrong", None, 2, "refused the API key: pass the key it was started with"),
        (SECRET, "nope", 3, "serves no model 'nope' (it serves scripted)"),
    ],
    ids=["no-key", "wrong-key", "wrong-model"],
)
def test_key_and_model_mistakes_are_one_line(
    scripted_server: str, key: str | None, model: str | None, code: int, message: str
) -> None:
    result = chat("--url", scripted_server, "-p", "hi", *(["--model", model] if model else []), key=key)
    assert result.returncode == code
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stdout == ""


def test_a_server_that_is_not_up_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_nemolaunch("chat", "--url", url, "-p", "hi")
    assert result.returncode == 4
    assert result.stderr == (
        f"nemolaunch: error: no server answers at {url} (connection refused): "
        "start one with `nemolaunch serve`, or pass --url with its address\n"
    )


def test_any_openai_server_without_timings_gets_a_measured_speed() -> None:
    with openai_stub() as (url, stub):
        result = run_nemolaunch("chat", "--url", url, "-p", "What is 2+2?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Four.\n"
    assert "Thinking hard." in result.stderr and "tokens/s, measured here]" in result.stderr
    assert stub.requests[0]["model"] == "stub-model"  # the model the server lists
    assert stub.requests[0]["messages"] == [{"role": "user", "content": "What is 2+2?"}]


def test_ctrl_c_stops_a_one_shot_answer_and_the_server_sees_the_client_go() -> None:
    with openai_stub(StubBehaviour(endless=True)) as (url, stub):
        process = subprocess.Popen(
            nemolaunch_argv("chat", "--url", url, "-p", "Count forever."),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=cli_env(),
            preexec_fn=sigint_default,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not stub.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few " more" pieces on the way
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
        assert stub.disconnected.wait(timeout=10), "the stream was still open after Ctrl-C"
    assert process.returncode == 130
    assert stdout.startswith("Four. more")
    assert stderr.splitlines()[-1] == "nemolaunch: error: Ctrl-C stopped the answer: the server stopped generating it"

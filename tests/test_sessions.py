"""A conversation survives a server restart: saved where its next turn begins, restored, reused."""

from __future__ import annotations

import json
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import cli_env, free_port, nemolaunch_argv, run_nemolaunch
from test_smoke import stop_with_sigint, wait_for_health

pytestmark = pytest.mark.llama

SYSTEM = "You are a patient assistant who answers questions about the sea. " * 12


def serve_with_sessions(model: Path, llama_bin_dir: Path, port: int, sessions: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        nemolaunch_argv(
            "serve", str(model), "--port", str(port), "--llama-cpp", str(llama_bin_dir), "--sessions", str(sessions),
            "--", "--threads", "1",
        ),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    wait_for_health(port, process)
    return process


def turn(port: int, messages: list[dict[str, str]], text: str) -> dict[str, int]:
    """One user turn, the whole history sent as agents send it; the reply joins the history."""
    messages.append({"role": "user", "content": text})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps({"messages": messages, "max_tokens": 16}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        reply = json.loads(response.read())
    message = reply["choices"][0]["message"]
    messages.append({"role": "assistant", "content": message.get("content") or ""})
    usage = reply["usage"]
    return {"prompt": usage["prompt_tokens"], "cached": usage["prompt_tokens_details"]["cached_tokens"]}


def test_each_turn_reuses_the_last_with_nemolaunchs_defaults(
    tiny_model: Path, llama_bin_dir: Path, tmp_path: Path
) -> None:
    """Four slots (llama-server's default), f16 cache, one conversation: turn k+1 reuses turn k."""
    port = free_port()
    server = serve_with_sessions(tiny_model, llama_bin_dir, port, tmp_path / "sessions")
    messages = [{"role": "system", "content": SYSTEM}]
    try:
        turns = [turn(port, messages, f"Question {number} about the sea?") for number in range(6)]
    finally:
        stop_with_sigint(server)
    assert turns[0]["cached"] == 0
    for number, usage in enumerate(turns[1:], start=2):
        assert usage["cached"] >= 0.9 * usage["prompt"], (number, turns)


def test_a_saved_session_is_reused_after_a_restart(tiny_model: Path, llama_bin_dir: Path, tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    data_home = tmp_path / "data"
    env = cli_env(XDG_DATA_HOME=str(data_home))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    messages = [{"role": "system", "content": SYSTEM}]
    server = serve_with_sessions(tiny_model, llama_bin_dir, port, sessions)
    try:
        assert stat.S_IMODE(sessions.stat().st_mode) == 0o700
        turn(port, messages, "How deep is the sea?")
        turn(port, messages, "And how salty?")
        history = tmp_path / "conversation.json"
        history.write_text(json.dumps(messages))
        saved = run_nemolaunch("session", "save", "sea-talk", "--messages", str(history), "--url", url, env=env)
        assert saved.returncode == 0, saved.stderr
        assert "saved session sea-talk" in saved.stderr
    finally:
        stop_with_sigint(server)

    server = serve_with_sessions(tiny_model, llama_bin_dir, port, sessions)
    try:
        loaded = run_nemolaunch("session", "load", "sea-talk", "--url", url, env=env)
        assert loaded.returncode == 0, loaded.stderr
        restored = json.loads(loaded.stdout)
        assert restored == messages
        third = turn(port, restored, "Why are waves white?")
        assert third["cached"] >= 0.9 * third["prompt"], third  # today's llama-server alone: 0
        listed = run_nemolaunch("session", "list", env=env)
        assert listed.stdout.split() == ["sea-talk"]
    finally:
        stop_with_sigint(server)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65])
def test_names_that_are_not_plain_file_names_are_refused(name: str, tmp_path: Path) -> None:
    history = tmp_path / "c.json"
    history.write_text('[{"role": "user", "content": "hi"}]')
    result = run_nemolaunch("session", "save", name, "--messages", str(history))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and "session name" in errors[0], result.stderr


def test_a_server_without_sessions_and_no_server_at_all_are_one_line(
    tiny_model: Path, llama_bin_dir: Path, tmp_path: Path
) -> None:
    history = tmp_path / "c.json"
    history.write_text('[{"role": "user", "content": "hi"}]')
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    nobody = run_nemolaunch("session", "save", "x", "--messages", str(history), "--url", nowhere)
    assert nobody.returncode == 4 and "no server answers at" in nobody.stderr
    port = free_port()
    process = subprocess.Popen(
        [str(llama_bin_dir / "llama-server"), "-m", str(tiny_model), "--port", str(port), "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_health(port)
        url = f"http://127.0.0.1:{port}/v1"
        plain = run_nemolaunch("session", "save", "x", "--messages", str(history), "--url", url)
        assert plain.returncode == 4
        assert "keeps no sessions: restart it with `nemolaunch serve --sessions DIR`" in plain.stderr
    finally:
        process.kill()
        process.wait(timeout=10)
    missing = run_nemolaunch("session", "load", "never-saved", env=cli_env(XDG_DATA_HOME=str(tmp_path)))
    assert missing.returncode == 3 and "no session never-saved" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    refused = run_nemolaunch("session", "save", "x", "--messages", str(bad))
    assert refused.returncode == 2 and "is not JSON" in refused.stderr

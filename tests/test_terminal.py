"""Real terminals (tmux): a person types a prompt into `serve`'s chat and `run`, sees the answer, presses
Ctrl-C, and nothing is left running under the shell."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from nemolaunch.scripted_model import write_scripted_model

from conftest import free_port, nemolaunch_argv
from fakehub import FakeHub, fake_hub_fixture, gguf_shard  # noqa: F401  (fixture)
from openai_stub import StubBehaviour, openai_stub
from test_smoke import wait_for_health
from tmux_pane import Pane, terminal, wait_until_gone

__all__ = ["terminal"]  # the fixture, imported for pytest
SCRIPT = ["Let me think.", "</think>", "Hello there!", "<|im_end|>"]


def command(*args: str) -> str:
    return shlex.join(nemolaunch_argv(*args))


@pytest.mark.llama
def test_serve_and_chat_in_two_panes(terminal, llama_bin_dir: Path, tmp_path: Path) -> None:
    model = write_scripted_model(tmp_path / "scripted.gguf", SCRIPT)
    port = free_port()
    server = terminal()
    server.type_line(
        command("serve", str(model), "--port", str(port), "--llama-cpp", str(llama_bin_dir)) + " -- --threads 1"
    )
    wait_for_health(port)
    client = terminal()
    client.type_line(command("chat", "--url", f"http://127.0.0.1:{port}/v1"))
    client.wait_for("Chatting with scripted")
    client.type_line("What is 2+2?")
    screen = client.wait_for("tokens/s]", after="> What is 2+2?")
    turn = screen.rsplit("> What is 2+2?", 1)[1]
    assert turn.split()[:5] == ["Let", "me", "think.", "Hello", "there!"], screen  # thinking, then the answer
    client.type_line("And 3+3?")  # the conversation goes on: the same model answers the second question
    client.wait_for("Hello there!", after="> And 3+3?")

    client.send("C-c")  # at the prompt: one Ctrl-C says how to leave, a second one leaves
    client.wait_for("Ctrl-C again")
    client.send("C-c")
    assert wait_until_gone(client) == [], client.screen()[-2000:]
    server.send("C-c")
    left = wait_until_gone(server)
    if left:  # llama-server exits on a second Ctrl-C at once
        server.send("C-c")
        left = wait_until_gone(server)
    assert left == [], server.screen()[-2000:]


@pytest.mark.llama
def test_serve_piped_into_tee_stops_on_ctrl_c(terminal, tiny_model: Path, llama_bin_dir: Path, tmp_path: Path) -> None:
    """`serve ... | tee log`: Ctrl-C reaches the whole pipeline, tee exits first, and llama-server, whose
    output now goes into a pipe nobody reads, still stops."""
    port = free_port()
    log = tmp_path / "serve.log"
    pane = terminal()
    pane.type_line(
        command("serve", str(tiny_model), "--port", str(port), "--llama-cpp", str(llama_bin_dir))
        + f" -- --threads 1 2>&1 | tee {shlex.quote(str(log))}"
    )
    wait_for_health(port)
    pane.send("C-c")
    left = wait_until_gone(pane)
    if left:  # llama-server exits on a second Ctrl-C at once
        pane.send("C-c")
        left = wait_until_gone(pane)
    assert left == [], pane.screen()[-2000:]
    assert "listening on" in log.read_text()  # the pipe really carried the server's output


def test_chat_keeps_the_conversation_and_ctrl_c_stops_an_answer(terminal) -> None:
    with openai_stub(StubBehaviour(endless=True)) as (url, stub):
        pane = terminal()
        pane.type_line(command("chat", "--url", url))
        pane.wait_for("Chatting with stub-model")
        pane.type_line("Count forever.")
        pane.wait_for("Four. more more", after="> Count forever.")
        pane.send("C-c")
        pane.wait_for("(stopped; this turn is left out", after="> Count forever.")
        assert stub.disconnected.wait(timeout=10), "the answer's stream stayed open after Ctrl-C"
        assert pane.children(), "the first Ctrl-C stops the answer, not the chat"

        stub.endless = False
        pane.type_line("What is 2+2?")
        pane.wait_for("tokens/s, measured here]", after="> What is 2+2?")
        pane.type_line("And 3+3?")
        pane.wait_for("tokens/s", after="> And 3+3?")
        # The stopped turn is left out; the answered one is kept, thinking aside.
        assert stub.requests[-1]["messages"] == [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "Four."},
            {"role": "user", "content": "And 3+3?"},
        ]
        pane.type_line("/clear")
        pane.wait_for("(conversation cleared)")
        pane.type_line("Again?")
        pane.wait_for("tokens/s", after="> Again?")
        assert stub.requests[-1]["messages"] == [{"role": "user", "content": "Again?"}]
        pane.type_line("/exit")
        assert wait_until_gone(pane) == [], pane.screen()[-2000:]


@pytest.mark.llama
def test_run_answers_a_typed_prompt_and_ctrl_c_leaves_nothing(terminal, llama_bin_dir: Path, tmp_path: Path) -> None:
    model = write_scripted_model(tmp_path / "scripted.gguf", SCRIPT)
    pane = terminal()
    pane.type_line(command("run", str(model), "--llama-cpp", str(llama_bin_dir)) + " -- --threads 1")
    pane.wait_for("/exit or Ctrl+C")
    time.sleep(0.5)  # llama-cli draws its prompt after the help
    pane.type_line("What is 2+2?")
    screen = pane.wait_for("Generation:", after="> What is 2+2?")
    turn = screen.rsplit("> What is 2+2?", 1)[1]
    assert "Let me think." in turn and "Hello there!" in turn
    pane.send("C-c")
    left = wait_until_gone(pane)
    assert left == [], pane.screen()[-2000:]
    assert pane.shell_pid  # the shell is still there, its prompt back


@pytest.mark.llama
def test_chat_saves_and_loads_a_session(terminal, llama_bin_dir: Path, tmp_path: Path) -> None:
    """/save and /load in the chat, against a server that keeps sessions (the restart itself is in test_sessions)."""
    model = write_scripted_model(tmp_path / "scripted.gguf", SCRIPT)
    port = free_port()
    server = terminal()
    server.type_line(
        command("serve", str(model), "--port", str(port), "--llama-cpp", str(llama_bin_dir), "--sessions",
                str(tmp_path / "sessions")) + " -- --threads 1"
    )  # fmt: skip
    wait_for_health(port)
    client = terminal(XDG_DATA_HOME=str(tmp_path / "data"))
    client.type_line(command("chat", "--url", f"http://127.0.0.1:{port}/v1"))
    client.wait_for("Chatting with scripted")
    client.type_line("What is 2+2?")
    client.wait_for("tokens/s]", after="> What is 2+2?")
    client.type_line("/save sums")
    client.wait_for("(saved sums:", after="> /save sums")
    client.type_line("/clear")
    client.wait_for("(conversation cleared)")
    client.type_line("/load sums")
    client.wait_for("(loaded sums: 2 messages", after="> /load sums")
    client.type_line("/load ../nope")
    client.wait_for("session name '../nope' is not valid", after="> /load ../nope")  # one line; the chat goes on
    client.type_line("/exit")
    assert wait_until_gone(client) == [], client.screen()[-2000:]
    server.send("C-c")
    left = wait_until_gone(server)
    if left:
        server.send("C-c")
        left = wait_until_gone(server)
    assert left == [], server.screen()[-2000:]
    assert (tmp_path / "data" / "nemolaunch" / "sessions" / "sums.json").is_file()


def wait_for_bytes(pane: Pane, name: str, *, timeout: float = 30) -> None:
    """Wait until the bar of file ``name`` shows more than 0 MB done (its third column: done/total)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in pane.screen().splitlines():
            cells = row.split()
            if len(cells) > 2 and cells[0] == name and "/" in cells[2] and float(cells[2].split("/")[0]) > 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"no bytes of {name} arrived within {timeout:.0f}s:\n{pane.screen()[-2000:]}")


def test_download_draws_bars_and_ctrl_c_keeps_what_came(
    terminal, fake_hub: FakeHub, big_machine: Path, tmp_path: Path
) -> None:
    """At a terminal `download` draws a bar for the quant and one per shard; Ctrl-C stops it with one line
    saying what is on disk, leaves nothing running, and the same command again finishes from there."""
    shards = {f"UD-Q2_K_XL/Bench-UD-Q2_K_XL-{i:05d}-of-00002.gguf": gguf_shard(i, 2, 12_000_000) for i in (1, 2)}
    fake_hub.add_repo("acme/Bench-GGUF", shards)
    fake_hub.rate_bytes_per_s = 4_000_000  # slow enough to watch and stop it (its 8 MiB header read: 2 s)
    hub_env = {key: value for key, value in fake_hub.env(tmp_path / "hf").items() if key.startswith(("HF_", "XDG_"))}
    pane = terminal(**hub_env)
    line = command("download", "acme/Bench-GGUF:UD-Q2_K_XL", "--hardware", str(big_machine))

    pane.type_line(line)
    screen = pane.wait_for("Bench-UD-Q2_K_XL-00002-of-00002.gguf")
    bars = [row.split() for row in screen.splitlines() if "MB" in row]
    # The quant's bar (bytes of all shards), then one per shard: name, bar, done/total, speed, time left.
    assert [(row[0], row[2].split("/")[1]) for row in bars] == [
        ("acme/Bench-GGUF:UD-Q2_K_XL", "24.0"),
        ("Bench-UD-Q2_K_XL-00001-of-00002.gguf", "12.0"),
        ("Bench-UD-Q2_K_XL-00002-of-00002.gguf", "12.0"),
    ], screen[-2000:]
    # Stop it only once the first shard has bytes on disk: a Ctrl-C before any byte arrived leaves
    # nothing to resume from, and the second run would (rightly) start that shard afresh.
    wait_for_bytes(pane, "Bench-UD-Q2_K_XL-00001-of-00002.gguf")
    pane.send("C-c")
    screen = pane.wait_for("run the same command again to resume")
    assert "nemolaunch: error: download stopped with" in screen
    assert wait_until_gone(pane) == [], screen[-2000:]

    fake_hub.rate_bytes_per_s = None
    fake_hub.reset_counters()  # (the first run also read the first shard's header for its plan)
    pane.type_line(line)
    screen = pane.wait_for("2 file(s) ready", after=line)
    assert "resuming UD-Q2_K_XL/Bench-UD-Q2_K_XL-00001-of-00002.gguf from" in screen
    fetched = sum(fake_hub.served("acme/Bench-GGUF", path) for path in shards)
    assert fetched < sum(map(len, shards.values())), screen[-2000:]  # the rest, not all again

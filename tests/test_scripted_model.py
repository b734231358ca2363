"""The scripted model says exactly what a test asks, through `nemolaunch serve` and the openai client:
reasoning apart from the answer, and tool calls in the Nemotron 3 format parsed into OpenAI `tool_calls`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nemolaunch.scripted_model import tool_call_script, write_scripted_model

from conftest import cli_env, free_port
from test_smoke import process_alive, start_serve, stop_with_sigint, wait_for_health

pytestmark = pytest.mark.llama

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def serve_model(llama_bin_dir: Path) -> Iterator:
    started: list[subprocess.Popen[str]] = []

    def serve(model: Path) -> int:
        port = free_port()
        process = start_serve(model, llama_bin_dir, port, env=cli_env())
        started.append(process)
        wait_for_health(port, process)
        return port

    yield serve
    for process in started:
        stop_with_sigint(process)
        assert not process_alive(process.pid)


def test_the_reply_is_the_script_at_nvidias_temperature(tmp_path: Path, serve_model) -> None:
    from openai import OpenAI

    script = ["Let me think.", "</think>", "Hello there!", "<|im_end|>"]
    model = write_scripted_model(tmp_path / "scripted.gguf", script)
    client = OpenAI(base_url=f"http://127.0.0.1:{serve_model(model)}/v1", api_key="not-needed")
    for _ in range(5):  # temperature 1.0, top-p 0.95, min-p 0.01: nemolaunch's sampling, every time the same
        reply = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Hi!"}])
        message = reply.choices[0].message
        assert (message.content, reply.choices[0].finish_reason) == ("Hello there!", "stop")
        assert message.model_extra["reasoning_content"] == "Let me think."


def test_a_tool_call_comes_back_as_openai_tool_calls_and_the_result_renders(tmp_path: Path, serve_model) -> None:
    from openai import OpenAI

    script = tool_call_script("get_weather", {"city": "Paris"}, thinking="The user wants the weather.")
    model = write_scripted_model(tmp_path / "tools.gguf", script)
    port = serve_model(model)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed")
    question = {"role": "user", "content": "What is the weather in Paris?"}
    reply = client.chat.completions.create(model="tools", messages=[question], tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.message.model_extra["reasoning_content"] == "The user wants the weather."

    # The follow-up an agent sends: the call, then the tool's result. It renders in the Nemotron format
    # and is answered (this model knows one reply: it calls the tool again).
    follow_up = [
        question,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump(include={"id", "type", "function"})]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'},
    ]
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/apply-template",
        data=json.dumps({"messages": follow_up, "tools": [WEATHER_TOOL]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        prompt = json.loads(response.read())["prompt"]
    assert '{"temperature_c": 21}' in prompt and "<tool_response>" in prompt
    again = client.chat.completions.create(model="tools", messages=follow_up, tools=[WEATHER_TOOL])
    assert again.choices[0].finish_reason == "tool_calls"


def test_a_script_that_repeats_a_piece_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        write_scripted_model(tmp_path / "bad.gguf", ["a", "b", "a", "<|im_end|>"])
    with pytest.raises(ValueError, match="distinct"):
        write_scripted_model(tmp_path / "bad.gguf", ["\n", "<|im_end|>"])  # the start token itself
    assert not list(tmp_path.iterdir())

"""Does turn k+1 of a conversation reuse turn k? And what does it save at turn 10?

Serves a model with `nemolaunch serve` (its defaults: 4 slots, f16 KV cache) and holds a 10-turn
conversation the way agents do (the whole history each time). For every turn it records the prompt
tokens and how many came from the cache (`usage.prompt_tokens_details.cached_tokens`). At turn 10
it measures the time to the first streamed token twice, with the cache (the default) and with
`cache_prompt: false` (every token processed again), as a ratio in the same run (medians of --runs).
Then it saves the session, restarts the server, restores it and reports the reuse of turn 11.

    .venv/bin/python benchmarks/prompt_reuse.py [--model tiny|scaled-0.4] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_servers import chat, free_port, nemolaunch, serving, stop, wait_until

SYSTEM = "You are a patient assistant who answers questions about the sea, at length. " * 20


def serve(model: Path, llama_cpp: Path, port: int, sessions: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        nemolaunch(
            "serve", str(model), "--port", str(port), "--llama-cpp", str(llama_cpp), "--sessions", str(sessions)
        ),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: serving(port, process))
    return process


def turn(port: int, messages: list[dict[str, str]], text: str) -> tuple[int, int]:
    messages.append({"role": "user", "content": text})
    reply = chat(port, {"messages": messages, "max_tokens": 24})
    message = reply["choices"][0]["message"]  # type: ignore[index]
    messages.append({"role": "assistant", "content": message.get("content") or ""})
    usage = reply["usage"]  # type: ignore[index]
    return usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def first_token_seconds(port: int, messages: list[dict[str, str]], *, cache: bool) -> float:
    body = {"messages": messages, "max_tokens": 1, "stream": True, "cache_prompt": cache}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as reply:
        for line in reply:
            if line.startswith(b"data: {"):
                return time.perf_counter() - started
    raise RuntimeError("no token came back")


def main() -> int:
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.tiny_model import write_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, default=None)
    parser.add_argument("--model", default="tiny", help="tiny, or scaled-GB such as scaled-0.4")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    llama_cpp = find_binary("llama-server", explicit_dir=args.llama_cpp).path.parent
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if args.model == "tiny":
            model = write_tiny_model(root / "tiny.gguf")
        else:
            from nemolaunch.scaled_model import shape_for_size, write_scaled_model

            model = write_scaled_model(root / "scaled.gguf", shape_for_size(int(float(args.model.split("-")[1]) * 1e9)))
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1"
        server = serve(model, llama_cpp, port, root / "sessions")
        messages = [{"role": "system", "content": SYSTEM}]
        try:
            rows = [turn(port, messages, f"Question {k} about tides and waves?") for k in range(1, args.turns)]
            messages.append({"role": "user", "content": "And the last question?"})
            # Warm the conversation's slot first: each measured request then starts from the same state.
            with_cache = []
            without = []
            for _ in range(args.runs):
                with_cache.append(first_token_seconds(port, messages, cache=True))
                without.append(first_token_seconds(port, messages, cache=False))
            messages.pop()
            history = root / "history.json"
            history.write_text(json.dumps(messages))
            subprocess.run(
                nemolaunch("session", "save", "bench", "--messages", str(history), "--url", url),
                check=True, capture_output=True, env={**os.environ, "XDG_DATA_HOME": str(root)},
            )  # fmt: skip
        finally:
            stop(server)
        server = serve(model, llama_cpp, port, root / "sessions")
        try:
            subprocess.run(
                nemolaunch("session", "load", "bench", "--url", url),
                check=True, capture_output=True, env={**os.environ, "XDG_DATA_HOME": str(root)},
            )  # fmt: skip
            restored = turn(port, messages, "After the restart: one more question?")
        finally:
            stop(server)
    print(f"model: {args.model} ({model.name}); nemolaunch serve defaults (4 slots, f16 KV cache)")
    print("| turn | prompt tokens | from cache | reused |")
    print("|---:|---:|---:|---:|")
    for number, (prompt, cached) in enumerate(rows, start=1):
        print(f"| {number} | {prompt} | {cached} | {cached / prompt:.0%} |")
    prompt, cached = restored
    print(f"| {args.turns + 1} after restart + restore | {prompt} | {cached} | {cached / prompt:.0%} |")
    hot, cold = statistics.median(with_cache), statistics.median(without)
    print(
        f"\nturn {args.turns}: time to first token {hot * 1e3:.1f} ms with the cache, {cold * 1e3:.1f} ms without "
        f"(median of {args.runs}; {cold / hot:.1f}× faster with it)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

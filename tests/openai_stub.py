"""An OpenAI-compatible server of the test's own, over real HTTP: what `nemolaunch chat` must handle from
servers that are not llama-server (no `timings`), and what llama-server cannot be made to do on cue:
answer forever until the client goes away, and tell the test that it went.

It streams Server-Sent Events as the OpenAI API does and records every request it gets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class StubBehaviour:
    model: str = "stub-model"
    thinking: list[str] = field(default_factory=lambda: ["Thinking ", "hard."])
    answer: list[str] = field(default_factory=lambda: ["Four", "."])
    endless: bool = False  # after the answer, keep sending " more" every 50 ms until the client leaves
    api_key: str | None = None
    requests: list[dict[str, object]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)


def _handler(behaviour: StubBehaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: pytest shows what matters
            pass

        def _authorised(self) -> bool:
            if behaviour.api_key is None or self.headers.get("Authorization") == f"Bearer {behaviour.api_key}":
                return True
            self._json(401, {"error": {"message": "Invalid API Key", "type": "authentication_error"}})
            return False

        def _json(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": behaviour.model, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            behaviour.requests.append(request)
            if not request.get("stream"):
                message = {"role": "assistant", "content": "".join(behaviour.answer)}
                self._json(200, {"object": "chat.completion", "choices": [{"index": 0, "message": message}]})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for delta in self._deltas():
                    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                behaviour.disconnected.set()

        def _deltas(self) -> Iterator[dict[str, str]]:
            for piece in behaviour.thinking:
                yield {"reasoning_content": piece}
            for piece in behaviour.answer:
                yield {"content": piece}
            while behaviour.endless:
                time.sleep(0.05)
                yield {"content": " more"}

    return Handler


@contextmanager
def openai_stub(behaviour: StubBehaviour | None = None) -> Iterator[tuple[str, StubBehaviour]]:
    """A running stub: its base URL (…/v1) and the behaviour, which records what it was asked."""
    behaviour = behaviour or StubBehaviour()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", behaviour
    finally:
        behaviour.endless = False
        server.shutdown()
        server.server_close()

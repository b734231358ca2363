"""Issue 22 item 2: no API key follows a redirect to another origin. A real server on 127.0.0.1
answers every request with a 302 to a second real server on 127.0.0.2 (another loopback origin);
for each client path that sends the key, the second server must never see it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nemolaunch.adapters.chat_client import ChatServer
from nemolaunch.adapters.server_status import server_status
from nemolaunch.adapters.sessions import load_session, save_session, sessions_folder
from nemolaunch.errors import KeyWouldLeaveOrigin, NemolaunchError

KEY = "sk-redirect-secret-4242"


def _serve(host: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), handler)  # port 0: a free one
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextlib.contextmanager
def redirecting_servers() -> Iterator[tuple[str, list[dict[str, str]], list[dict[str, str]]]]:
    """A server on 127.0.0.1 whose every answer is a 302 to one on 127.0.0.2: (its /v1 URL, the headers
    each saw)."""
    first_seen: list[dict[str, str]] = []
    second_seen: list[dict[str, str]] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            second_seen.append({k.lower(): v for k, v in self.headers.items()})
            body = json.dumps(
                {"data": [], "n_saved": 1, "n_written": 1, "n_restored": 1, "tokens": [1], "prompt": "p"}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    second = _serve("127.0.0.2", Elsewhere)
    target = f"http://127.0.0.2:{second.server_address[1]}"

    class Redirector(BaseHTTPRequestHandler):
        def _redirect(self) -> None:
            first_seen.append({k.lower(): v for k, v in self.headers.items()})
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(302)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _redirect

        def log_message(self, *args: object) -> None:
            pass

    first = _serve("127.0.0.1", Redirector)
    try:
        yield f"http://127.0.0.1:{first.server_address[1]}/v1", first_seen, second_seen
    finally:
        for server in (first, second):
            server.shutdown()
            server.server_close()


@pytest.fixture
def redirect_pair() -> Iterator[tuple[str, list[dict[str, str]], list[dict[str, str]]]]:
    with redirecting_servers() as pair:
        yield pair


def _assert_key_kept(first_seen: list[dict[str, str]], second_seen: list[dict[str, str]]) -> None:
    assert any(h.get("authorization") == f"Bearer {KEY}" for h in first_seen)  # given to its origin
    assert second_seen, "the redirect was not followed at all: the test proves nothing"
    assert all(KEY not in json.dumps(headers) for headers in second_seen)


def _assert_never_followed(first_seen: list[dict[str, str]], second_seen: list[dict[str, str]]) -> None:
    assert any(h.get("authorization") == f"Bearer {KEY}" for h in first_seen)  # given to its origin
    assert second_seen == [], "a keyed request followed the redirect to another origin"


@pytest.mark.parametrize("call", ["save", "load"])
def test_session_save_and_load_refuse_a_redirect_to_another_origin(redirect_pair, tmp_path, monkeypatch, call) -> None:
    """urllib would copy the key to wherever a 302 points: the redirect is refused in one line instead."""
    url, first_seen, second_seen = redirect_pair
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KeyWouldLeaveOrigin) as caught:
        if call == "save":
            save_session(url, "talk", [{"role": "user", "content": "hi"}], api_key=KEY)
        else:
            sessions_folder().mkdir(parents=True)
            (sessions_folder() / "talk.json").write_text('{"messages": [{"role": "user", "content": "hi"}]}')
            load_session(url, "talk", api_key=KEY)
    assert "127.0.0.2" in str(caught.value) and KEY not in str(caught.value)
    _assert_never_followed(first_seen, second_seen)


def test_ps_server_status_refuses_a_redirect_with_the_key(redirect_pair) -> None:
    url, first_seen, second_seen = redirect_pair
    status = server_status(url.removesuffix("/v1"), key=KEY, timeout=5)
    # /health carries no key: it may follow (the other origin answers ok); /slots and /metrics carry it: refused.
    assert all(KEY not in json.dumps(headers) for headers in second_seen)
    assert any(h.get("authorization") == f"Bearer {KEY}" for h in first_seen)
    assert status.slots_total is None


def test_chat_openai_client_keeps_the_key_to_its_origin(redirect_pair) -> None:
    url, first_seen, second_seen = redirect_pair
    with contextlib.suppress(NemolaunchError):
        ChatServer(url, KEY).served_models()
    _assert_key_kept(first_seen, second_seen)

"""A running OpenAI-compatible server, through the openai client: the model it serves, one streamed
turn (the thinking apart from the answer, then the speed) and one raw response, with every failure
turned into nemolaunch's one-line errors.

Imported only by `nemolaunch chat`: openai (and httpx under it) stay out of `nemolaunch --help`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import openai

from nemolaunch.errors import (
    ApiKeyNeeded,
    ApiKeyRejected,
    BadOption,
    ChatRequestFailed,
    ModelNotServed,
    ServerUnreachable,
    first_line,
)

#: Sent when no key was given: the openai client needs one, and a server without a key ignores it.
NO_KEY = "not-needed"
# A server that is not up is known in seconds; an answer from a 550B model may take minutes.
_TIMEOUT = openai.Timeout(600.0, connect=5.0)


@dataclass(frozen=True)
class Piece:
    kind: Literal["thinking", "answer"]
    text: str


@dataclass(frozen=True)
class TurnStats:
    tokens: int | None
    per_second: float | None
    measured_by: Literal["server", "client"]  # the server's `timings`, or this end's clock


Message = dict[str, str]


class ChatServer:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        self.api_key = api_key  # for llama-server's own endpoints beside the OpenAI ones (sessions)
        self._has_key = api_key is not None
        # No retries: a server that is down is one line at once, not three attempts later.
        self._client = openai.OpenAI(base_url=url, api_key=api_key or NO_KEY, max_retries=0, timeout=_TIMEOUT)

    def served_models(self) -> list[str]:
        with self._errors():
            return [model.id for model in self._client.models.list().data]

    def pick_model(self, requested: str | None) -> str:
        """The model to ask for: the one named, once the server is known to serve it, else its first."""
        served = self.served_models()
        if requested is not None:
            if served and requested not in served:
                raise ModelNotServed(url=self.url, model=requested, served=served)
            return requested
        if not served:
            raise BadOption(option="--model", value="(not given)", hint=f"{self.url}/models lists no model: name one")
        return served[0]

    def stream(self, model: str, messages: list[Message]) -> Iterator[Piece | TurnStats]:
        """One answer, piece by piece, then its TurnStats. Closing the iterator (or Ctrl-C) closes the
        connection, and llama-server stops generating for a client that has gone."""
        started = time.monotonic()
        first_piece: float | None = None
        pieces = 0
        timings: dict[str, Any] | None = None
        usage_tokens: int | None = None
        with self._errors():
            response = self._client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            try:
                for chunk in response:
                    extra = chunk.model_extra or {}
                    timings = extra.get("timings") or timings
                    if chunk.usage is not None:
                        usage_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        delta = choice.delta
                        thinking = (delta.model_extra or {}).get("reasoning_content")
                        for kind, text in (("thinking", thinking), ("answer", delta.content)):
                            if text:
                                first_piece = first_piece or time.monotonic()
                                pieces += 1
                                yield Piece(kind, text)  # type: ignore[arg-type]
            finally:
                response.close()
        yield _stats(timings, usage_tokens or pieces or None, time.monotonic() - (first_piece or started))

    def complete_raw(self, model: str, messages: list[Message]) -> dict[str, Any]:
        """The server's whole response, as it sent it (llama-server adds `timings`, `reasoning_content`)."""
        with self._errors():
            raw = self._client.chat.completions.with_raw_response.create(model=model, messages=messages)
            return json.loads(raw.text)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except openai.AuthenticationError as exc:
            raise (ApiKeyRejected if self._has_key else ApiKeyNeeded)(url=self.url) from exc
        except openai.APIConnectionError as exc:
            raise ServerUnreachable(url=self.url, reason=_connection_reason(exc)) from exc
        except openai.APIStatusError as exc:
            raise ChatRequestFailed(url=self.url, status=exc.status_code, reason=_server_words(exc)) from exc


def _stats(timings: dict[str, Any] | None, tokens: int | None, seconds: float) -> TurnStats:
    if timings and timings.get("predicted_per_second"):
        return TurnStats(
            tokens=timings.get("predicted_n"), per_second=float(timings["predicted_per_second"]), measured_by="server"
        )
    per_second = tokens / seconds if tokens and seconds > 0 else None
    return TurnStats(tokens=tokens, per_second=per_second, measured_by="client")


def _connection_reason(exc: openai.APIConnectionError) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "it did not answer in time"
    cause = exc.__cause__
    text = first_line(cause) if cause is not None else first_line(exc)
    # The HTTP library says "[Errno 111] Connection refused": the words are enough.
    return text.split("] ", 1)[-1].strip().lower() or "no connection"


def _server_words(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return first_line(Exception(str(message)))
    return first_line(exc)

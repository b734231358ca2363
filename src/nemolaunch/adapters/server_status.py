"""Asking a running llama-server how it is: /health, /slots and /metrics, each a short plain GET.

A server that does not answer, answers an error, or is busy past the timeout is reported as such
(``health`` says what happened), never raised: `ps` shows every launch, answering or not.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from nemolaunch.adapters.same_origin import local_opener
from nemolaunch.core.launch_record import busy_slots, generation_speed, parse_metrics

#: Long enough for a server on a loaded machine to answer between two decode steps; short enough
#: that `ps` over a hung server still returns promptly.
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ServerStatus:
    health: str  # "ok", "loading", "no answer (...)", "error 500", ...
    slots_busy: int | None = None
    slots_total: int | None = None
    tokens_per_s: float | None = None


#: Never through a proxy (the server is one this machine launched); never the key to another origin.
_OPENER = local_opener()


def _get(url: str, key: str | None, timeout: float) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def server_status(base: str, *, key: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> ServerStatus:
    """``base`` is the server's root URL, such as ``http://127.0.0.1:8001``."""
    try:
        status, _ = _get(f"{base}/health", None, timeout)  # /health needs no key
    except (OSError, urllib.error.URLError) as exc:
        return ServerStatus(health=f"no answer ({_reason(exc)})")
    if status == 503:
        return ServerStatus(health="loading")
    if status != 200:
        return ServerStatus(health=f"error {status}")
    busy = total = None
    speed = None
    try:
        slots_status, body = _get(f"{base}/slots", key, timeout)
        if slots_status == 200:
            listed = json.loads(body)
            if isinstance(listed, list):
                busy, total = busy_slots(listed)
        metrics_status, body = _get(f"{base}/metrics", key, timeout)
        if metrics_status == 200:
            speed = generation_speed(parse_metrics(body.decode(errors="replace")))
    except (OSError, urllib.error.URLError, ValueError):
        pass  # healthy, but busy past the timeout: what it said so far stands
    return ServerStatus(health="ok", slots_busy=busy, slots_total=total, tokens_per_s=speed)

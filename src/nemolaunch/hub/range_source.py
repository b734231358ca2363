"""Ranged GETs of one file: where to ask (the Hub's redirect, resolved once), and how to read fast.

The Hub answers ``/resolve/<commit>/<path>`` with a redirect to a CDN whose (signed) URL serves
``Range`` requests. That first step goes through huggingface_hub's own client: its headers and token,
its proxy settings, and its error types (gated, missing, ...). Like huggingface_hub, it asks with a
HEAD that does not follow the redirect to another origin, so a signed URL is only ever used for GETs,
and the token never leaves the Hub's origin.

The bytes then come over plain ``http.client`` connections, one per fetching thread, kept alive from
piece to piece and read with ``readinto1`` into that thread's reused buffer (one ``recv`` per call,
no copy in between). Through httpx each 64 KiB arrives as a new ``bytes`` object parsed by h11 in
Python while holding the GIL: on the loopback hub that cost about 4x the client CPU per byte (~0.3 s
per GB against ~0.08 s), and with dozens of connections the GIL, not the link, would set the pace. Where a
proxy applies to the CDN's host, huggingface_hub's client carries the bytes instead: it knows how to
talk to proxies, and http.client is not taught that here.
"""

from __future__ import annotations

import functools
import http.client
import re
import ssl
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from nemolaunch import __version__
from nemolaunch.errors import (
    HubRequestFailed,
    NemolaunchError,
    ServedAnswerInvalid,
    ServedSizeMismatch,
    first_line,
)

# Statuses worth asking again: the server is busy or broken for a moment, not refusing.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# From a CDN (not the Hub), these mean the signed URL expired: ask the Hub for a fresh one.
_RENEW_STATUSES = frozenset({401, 403, 410})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10


class Retry(Exception):
    """A transfer failed in a way worth retrying from the bytes on disk; ``reason`` says how, for people."""

    def __init__(self, reason: str, *, renew: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.renew = renew  # the URL may have expired: resolve it again first


class RangeIgnored(Exception):
    """The server answered a ranged request with other bytes than asked for (a 200, another range, a 416)."""


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]  # sent with every GET: the token only when the URL is on the Hub's own origin
    direct: bool  # http.client may carry it (no proxy applies)


class Body:
    """The bytes of one response, ``length`` of them, read with ``readinto``."""

    def __init__(self, length: int, read: Callable[[memoryview], int], close: Callable[[], None]) -> None:
        self.length = length
        self.readinto = read
        self.close = close


class FileSource:
    """Where one file's bytes come from; shared by the threads fetching that file."""

    def __init__(
        self,
        *,
        repo_id: str,
        path: str,
        url: str,
        token: str | None,
        stall_timeout_s: float,
        translate: Callable[[Exception], NemolaunchError],
    ) -> None:
        self.repo_id = repo_id
        self.path = path  # the repo path, for messages
        self.url = url
        self.token = token
        self.stall_timeout_s = stall_timeout_s
        self.translate = translate
        self._target: Target | None = None
        self._lock = threading.Lock()

    def target(self) -> Target:
        """Where to send GETs; asks the Hub once (raises Retry, or the translated error)."""
        with self._lock:
            if self._target is None:
                self._target = self._resolve()
            return self._target

    def renew(self, stale: Target) -> None:
        with self._lock:
            if self._target is stale:
                self._target = None

    def connect(self) -> Connection:
        return Connection(self)

    def _resolve(self) -> Target:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        headers = build_hf_headers(token=self.token or False, library_name="nemolaunch", library_version=__version__)
        headers["Accept-Encoding"] = "identity"  # sizes and offsets are of the file itself
        timeout = httpx2.Timeout(self.stall_timeout_s, connect=min(self.stall_timeout_s, 30.0))
        url = self.url
        try:
            for _ in range(_MAX_REDIRECTS):
                response = get_session().head(url, headers=headers, timeout=timeout, follow_redirects=False)
                if response.status_code not in _REDIRECTS or "location" not in response.headers:
                    hf_raise_for_status(response)
                    return Target(url, dict(headers), _is_direct(url))
                url = urljoin(url, response.headers["location"])
                if _origin(url) != _origin(self.url):
                    # The CDN: its signed URL needs (and must not see) the token.
                    plain = {"user-agent": headers["user-agent"], "Accept-Encoding": "identity"}
                    return Target(url, plain, _is_direct(url))
            raise HubRequestFailed(repo_id=self.repo_id, status=response.status_code, reason="too many redirects")
        except httpx2.TimeoutException:
            raise Retry(f"no bytes for {self.stall_timeout_s:g} s") from None
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise Retry(f"connection lost: {first_line(exc)}") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in RETRY_STATUSES:
                raise Retry(f"the server answered {status}") from None
            raise self.translate(exc) from exc
        except httpx2.RequestError as exc:  # a proxy refusing, a bad URL: asking again will not help
            raise self.translate(exc) from exc


class Connection:
    """One fetching thread's connection: GETs of byte ranges, kept alive from one to the next."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self._http: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int | None] | None = None

    def get(self, target: Target, start: int, end: int, size: int) -> Body:
        """Ask for bytes ``[start, end)`` of a file of ``size`` bytes; raises Retry, RangeIgnored or a fatal error."""
        headers = dict(target.headers)
        if start or end < size:
            # To the end, the range is left open, as huggingface_hub asks for it.
            headers["Range"] = f"bytes={start}-" if end == size else f"bytes={start}-{end - 1}"
        if target.direct:
            status, reply_headers, length, read, close = self._direct_get(target.url, headers)
        else:
            status, reply_headers, length, read, close = self._client_get(target.url, headers)
        try:
            _check_answer(status, reply_headers, start, end, size, target, self.source)
            if length == 0:
                raise Retry("the server sent no bytes")
        except BaseException:
            close()
            raise
        return Body(length if length is not None else end - start, read, close)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # --- http.client: large reads into the caller's buffer ----------------------------------------------
    def _direct_get(self, url: str, headers: dict[str, str]) -> tuple[int, Any, int | None, Any, Any]:
        parts = urlsplit(url)
        origin = _origin(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        stall = self.source.stall_timeout_s
        for again in (False, True):
            fresh = self._http is None or self._http.sock is None or self._origin != origin
            try:
                if fresh:
                    self.close()
                    self._http = _new_connection(parts.scheme, origin[1], parts.port, min(stall, 30.0))
                    self._origin = origin
                    self._http.connect()
                    assert self._http.sock is not None
                    self._http.sock.settimeout(stall)  # the read timeout is the stall detector
                assert self._http is not None
                self._http.request("GET", path, headers=headers)
                response = self._http.getresponse()
                break
            except TimeoutError:
                self.close()
                raise Retry(f"no bytes for {stall:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if fresh or again:
                    raise Retry(f"connection lost: {first_line(exc) or type(exc).__name__}") from None
                # A kept-alive connection the server closed meanwhile: ask once more, on a new one.
        connection = self._http
        left = response.length
        # One recv per call, straight into the caller's buffer, returning what has come: bytes that
        # arrived before a stall are never held back (HTTPResponse.readinto waits to fill the buffer).
        # Without a length (chunked), HTTPResponse reads: only small answers come that way.
        plain = left is not None and not response.chunked and response.fp is not None
        readinto = response.fp.readinto1 if plain else response.readinto  # type: ignore[union-attr]

        def read(view: memoryview) -> int:
            nonlocal left
            try:
                count = readinto(view if left is None else view[:left])
            except TimeoutError:
                self._drop(connection)
                raise Retry(f"no bytes for {stall:g} s") from None
            except http.client.IncompleteRead:
                self._drop(connection)
                raise Retry("the server ended the transfer early") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connection)
                raise Retry(f"connection lost: {first_line(exc) or type(exc).__name__}") from None
            if count == 0 and len(view):
                self._drop(connection)
                raise Retry("the server ended the transfer early")
            if left is not None:
                left -= count
                if left == 0:
                    response.close()  # read to its end: the connection is free for the next request
            return count

        def close() -> None:
            if not response.isclosed():  # left half read: this connection cannot carry another request
                self._drop(connection)

        return response.status, response.headers, response.length, read, close

    def _drop(self, connection: http.client.HTTPConnection | None) -> None:
        if connection is None:
            return
        connection.close()
        if self._http is connection:
            self._http = None

    # --- huggingface_hub's client, where a proxy applies ---------------------------------------------
    def _client_get(self, url: str, headers: dict[str, str]) -> tuple[int, Any, int | None, Any, Any]:
        import httpx2
        from huggingface_hub.utils import get_session

        stall = self.source.stall_timeout_s
        timeout = httpx2.Timeout(stall, connect=min(stall, 30.0))
        session = get_session()
        try:
            response = session.send(session.build_request("GET", url, headers=headers, timeout=timeout), stream=True)
        except httpx2.TimeoutException:
            raise Retry(f"no bytes for {stall:g} s") from None
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise Retry(f"connection lost: {first_line(exc)}") from None
        except httpx2.RequestError as exc:
            raise self.source.translate(exc) from exc
        chunks = response.iter_raw()
        pending = memoryview(b"")

        def read(view: memoryview) -> int:
            nonlocal pending
            try:
                while not pending:
                    pending = memoryview(next(chunks))
            except StopIteration:
                raise Retry("the server ended the transfer early") from None
            except httpx2.TimeoutException:
                raise Retry(f"no bytes for {stall:g} s") from None
            except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                raise Retry(f"connection lost: {first_line(exc)}") from None
            count = min(len(view), len(pending))
            view[:count] = pending[:count]
            pending = pending[count:]
            return count

        length = response.headers.get("content-length")
        return response.status_code, response.headers, int(length) if length else None, read, response.close


def _check_answer(
    status: int, headers: Any, start: int, end: int, size: int, target: Target, source: FileSource
) -> None:
    """Raise unless the answer carries exactly bytes ``[start, ...)`` of this file.

    A size that disagrees with the listing, or headers that disagree with each other, are said as such
    and not retried: asking again gets the same answer, so "run again to resume" would be untrue.
    """
    length = headers.get("content-length")
    if length is not None and not length.strip().isdigit():
        raise ServedAnswerInvalid(
            path=source.path, header="Content-Length", value=length, conflict="that is no byte count"
        )
    if status == 206:
        content_range = headers.get("content-range", "")
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None or int(match["first"]) != start:
            raise RangeIgnored(f"asked for bytes from {start}, got {content_range!r}")
        if match["total"] != "*" and int(match["total"]) != size:
            raise ServedSizeMismatch(path=source.path, listed=size, served=int(match["total"]), header="Content-Range")
        span = int(match["last"]) - int(match["first"]) + 1
        if length is not None and int(length) != span:
            # The two headers disagree: the server (or a proxy) is broken, whichever is right.
            raise ServedAnswerInvalid(
                path=source.path,
                header="Content-Length",
                value=length,
                conflict=f"its Content-Range ({content_range}) names {span} bytes",
            )
        if span > end - start:
            raise Retry(f"the server sent more than the range asked for ({content_range!r})")
        return
    if status == 200:
        if start or end < size:
            raise RangeIgnored("the server ignored the Range header")
        if length is not None and int(length) != size:
            raise ServedSizeMismatch(path=source.path, listed=size, served=int(length), header="Content-Length")
        return
    if status == 416:
        raise RangeIgnored("the server will not serve that range (416)")
    if status in RETRY_STATUSES:
        raise Retry(f"the server answered {status}")
    if status in _RENEW_STATUSES and _origin(target.url) != _origin(source.url):
        raise Retry(f"the server answered {status}", renew=True)
    reason = "the CDN redirected again" if 300 <= status < 400 else "the file's bytes were refused"
    raise HubRequestFailed(repo_id=source.repo_id, status=status, reason=f"{reason} ({status})")


_CONTENT_RANGE = re.compile(r"bytes (?P<first>\d+)-(?P<last>\d+)/(?P<total>\d+|\*)")


def _new_connection(scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    import httpx2

    # The trust store huggingface_hub's client uses (certifi, SSL_CERT_FILE), so both accept the same CDN.
    # Made once: loading the certificates takes milliseconds, and one context serves every connection.
    return httpx2.create_ssl_context()


def _is_direct(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return False
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass(parts.hostname or ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port

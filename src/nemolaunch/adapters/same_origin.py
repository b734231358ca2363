"""urllib openers whose redirects keep the API key to the origin it was given for.

urllib's own redirect handler copies every header, Authorization included, to wherever a 3xx points:
a server (or anything in between) could send the key to a host of its choosing. Here a redirect to
another scheme, host or port is not followed at all when the request carries a key (llama-server
never redirects, so such an answer is a misconfiguration or an attack; going on without the key
would only turn it into a puzzling 401), and goes on as usual when it carries none."""

from __future__ import annotations

import urllib.error
import urllib.request
from email.message import Message
from typing import IO
from urllib.parse import urlsplit


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


class RedirectLeavesOrigin(urllib.error.URLError):
    """A keyed request was redirected to another origin: ``url`` asked, ``target`` where it pointed."""

    def __init__(self, url: str, target: str) -> None:
        super().__init__(f"redirected to {target}, another origin; the API key was not sent there")
        self.url = url
        self.target = target


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects within the request's origin; one that leaves it with a key raises RedirectLeavesOrigin."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str
    ) -> urllib.request.Request | None:
        keyed = any(name.lower() == "authorization" for name in (*req.headers, *req.unredirected_hdrs))
        if keyed and _origin(newurl) != _origin(req.full_url):
            raise RedirectLeavesOrigin(req.full_url, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def local_opener() -> urllib.request.OpenerDirector:
    """Never through a proxy (the server is one this machine launched), never the key to another origin."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), SameOriginRedirects())


def same_origin_opener() -> urllib.request.OpenerDirector:
    """urllib's usual opener (proxies from the environment), but never the key to another origin."""
    return urllib.request.build_opener(SameOriginRedirects())

"""urllib openers whose redirects keep the API key to the origin it was given for.

urllib's own redirect handler copies every header, Authorization included, to wherever a 3xx points:
a server (or anything in between) could send the key to a host of its choosing. Here a redirect to
another scheme, host or port goes on without it."""

from __future__ import annotations

import urllib.request
from email.message import Message
from typing import IO
from urllib.parse import urlsplit


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but drops Authorization when one leaves the request's origin."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in list(new.headers):
                if name.lower() == "authorization":
                    del new.headers[name]
            new.unredirected_hdrs.pop("Authorization", None)
        return new


def local_opener() -> urllib.request.OpenerDirector:
    """Never through a proxy (the server is one this machine launched), never the key to another origin."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), SameOriginRedirects())


def same_origin_opener() -> urllib.request.OpenerDirector:
    """urllib's usual opener (proxies from the environment), but never the key to another origin."""
    return urllib.request.build_opener(SameOriginRedirects())

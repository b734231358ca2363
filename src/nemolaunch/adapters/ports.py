"""Is a TCP port free to bind? Checked before exec so the user hears it from us, in one line."""

from __future__ import annotations

import errno
import socket
from typing import Any

from nemolaunch.errors import BadOption, HostDoesNotResolve, PortInUse, PortOutOfRange


def check_host(host: str) -> None:
    """Refuse an address that names no host (``999.1.1.1``, a typo'd name) before anything else is said."""
    _resolve(host, 0)


def _resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        # UnicodeError: a name the IDNA codec refuses (an empty label, a label over 63 characters).
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise HostDoesNotResolve(host=host, reason=reason) from exc


def check_port(*, host: str, port: int, option: str = "--port") -> None:
    if not 1 <= port <= 65535:
        raise PortOutOfRange(port=port, option=option)
    family, socktype, proto, _, address = _resolve(host, port)[0]
    with socket.socket(family, socktype, proto) as probe:
        # llama-server sets SO_REUSEADDR too, so a port in TIME_WAIT is free for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host=host, port=port) from exc
            if exc.errno == errno.EADDRNOTAVAIL:
                raise BadOption(
                    option="--host", value=host, hint="no network interface of this machine has that address"
                ) from exc
            if exc.errno == errno.EACCES:
                raise BadOption(
                    option="--port", value=port, hint="ports below 1024 need root; pick one above 1024"
                ) from exc
            raise


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback: where other machines may reach it."""
    import psutil

    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                found.append(address.address)
    return sorted(set(found))

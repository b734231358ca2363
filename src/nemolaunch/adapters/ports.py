"""Is a TCP port free to bind? Checked before exec so the user hears it from us, in one line."""

from __future__ import annotations

import errno
import socket

from nemolaunch.errors import BadOption, PortInUse, PortOutOfRange


def check_port(*, host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise PortOutOfRange(port=port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadOption(option="--host", value=host, hint=f"it does not resolve ({exc.strerror})") from exc
    family, socktype, proto, _, address = infos[0]
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

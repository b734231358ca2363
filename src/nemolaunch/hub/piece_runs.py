"""How a file's pieces are asked for: their size, the runs a connection takes, and how much of a run
one request asks for.
"""

from __future__ import annotations

import threading

_MIB = 1024 * 1024
MIN_PIECE_BYTES = 32 * _MIB
MAX_PIECE_BYTES = 64 * _MIB
# A run asks for about a second's worth of its pieces at a time (the first request, one piece).
REQUEST_S = 1.0
MAX_PIECES_PER_REQUEST = 16


def piece_bytes_for(size: int, connections: int) -> int:
    """How big the pieces of a file of ``size`` bytes fetched over about ``connections`` connections are.

    At least two rounds of pieces per connection: what is left to hash when the last byte arrives is
    about one round, so with one round it is nearly the whole file (1 GB in 4 shards on a capped hub:
    2.07 s with one round of 32 MiB, 1.69 s with two of 16 MiB). And 32 to 64 MiB each, so that a
    request's round trip to a CDN stays small beside its transfer (and what is left to hash after the
    last byte of a big file stays a few hundred MiB): the connection budget starts with fewer
    connections than pieces are cut for, and per request costs showed there (the same 1 GB from an
    uncapped hub, connections grown as they pay: 1.3 s in 16 MiB pieces, 1.04 s in 32 MiB; capped,
    1.67 s and 1.98 s). One connection takes the file in one piece: its bytes come in order anyway.
    """
    if connections <= 1:
        return max(1, size)
    wanted = -(-size // (2 * connections))
    return min(MAX_PIECE_BYTES, max(MIN_PIECE_BYTES, -(-wanted // _MIB) * _MIB))


class Run:
    """Pieces ``first`` to ``last`` that one connection fetches in order, with requests of one or more.

    Another connection of the file may take the pieces past the current request (``segmented_fetch``):
    ``last`` then shrinks. ``lock`` keeps that and the choice of the next request apart, so no piece
    is asked for by both; a request is never cut short, so no connection is dropped and no byte is
    fetched twice.
    """

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        self.requested_to = first  # the last piece of the request in flight
        self.lock = threading.Lock()


class Pace:
    """How fast one connection brought its last request, to size its next: about ``REQUEST_S`` long.

    Long enough that a round trip is a small part of it (1 MB/s of requests and 10-50 ms each to a
    CDN, 10 ms each between 2 busy cores here), short enough that a run cut for another connection
    keeps little for itself.
    """

    def __init__(self) -> None:
        self.bytes_per_s = 0.0

    def took(self, nbytes: int, seconds: float) -> None:
        if nbytes > 0 and seconds > 0:
            self.bytes_per_s = nbytes / seconds

    def pieces(self, piece_bytes: int) -> int:
        return max(1, min(MAX_PIECES_PER_REQUEST, int(self.bytes_per_s * REQUEST_S / piece_bytes)))

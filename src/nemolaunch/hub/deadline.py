"""An overall time limit on one answer from the Hub (a listing, a header read).

A read timeout only bounds the silence between two bytes: a server, CDN or proxy that trickles one
byte a second never trips it, and ``plan REPO`` would wait for ever. A ``Deadline`` bounds the
whole answer: each network wait is given no more than what is left, and the body is checked
against the clock after every chunk, so the call ends within about the deadline with HubTooSlow.
Downloads are not bounded this way (a 50 GB shard may rightly take hours): they have the stall
timeout, and their bars show the speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from nemolaunch.errors import HubTooSlow

DEFAULT_HUB_DEADLINE_S = 120.0
#: A listing or a header past this is not one (the Ultra's listing is tens of kB).
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class Deadline:
    def __init__(
        self, seconds: float, *, endpoint: str, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.endpoint = endpoint
        self.what = what
        self._clock = clock
        self._ends = clock() + seconds

    def left_s(self) -> float:
        return self._ends - self._clock()

    def timeout(self) -> float:
        """Seconds for the next connect or read: what is left, but never 0 (httpx takes 0 as no limit)."""
        return max(0.05, self.left_s())

    def check(self, received: int) -> None:
        if self.left_s() <= 0:
            raise HubTooSlow(
                endpoint=self.endpoint, what=self.what, seconds=f"{self.seconds:g}", received=_bytes(received)
            )

    def read_body(self, chunks: Iterable[bytes], *, limit: int = MAX_ANSWER_BYTES) -> bytes:
        """Every chunk of a streamed body, within the deadline and ``limit`` bytes (over it: ValueError)."""
        body = bytearray()
        for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise ValueError(f"the answer is over {limit} bytes")
            self.check(len(body))
        return bytes(body)  # an answer that ended is whole, even if its last chunk came late


def _bytes(count: int) -> str:
    from nemolaunch.core.download_plan import human_bytes

    return "1 byte" if count == 1 else f"{count} bytes" if count < 1000 else human_bytes(count)

"""How many connections may carry a run's bytes at once: a few at first, more while more pay.

A CDN edge caps each connection, so against one, every connection more adds its cap to the speed, up to
the link's; against a server that does not cap (a near mirror, a fast link), more connections only
share the same bytes and cost CPU in switching between them (1 GB in 4 shards from a loopback hub on 2
cores: 1.04 s over 4 connections, 1.12 s over 8, 1.21 s over 32, measured). Neither kind can be told in
advance. So the run starts with ``first`` connections and measures its speed over a short window:
``round_trips`` of its requests' answer times, and at least ``min_window_s``, so that a new
connection's request is answered and its bytes flow within it (a far server's windows are longer than a
near one's). At the start and after a step up it lets one window pass (the new connections' requests
and first bytes), then measures: while the speed beats the one before the step by ``gain``, it steps up
again (up to ``most``); when it does not, it goes back to the number before that step. A step is a
doubling, or x4 after a doubling that nearly doubled the speed (``leap``): then the connections, not
the link, are the limit, and a capped CDN reaches 32 connections in two steps instead of three. A link
changes over a long download, and a short window can mislead (a far server's connections take longer to
get up to speed), so ``reprobe_s`` later it measures afresh and tries one doubling more, over windows
that grow with the download's age (a tenth of it).

It is a semaphore to the fetching threads, shared by files (``owners``): a file without a connection
goes first, and until every file expected has asked (they start a few ms apart) none takes more than
its share. A thread keeps its slot (and its connection, kept alive) from run to run unless the number
shrank (``keep``); ``alone`` tells a file whether its one connection is all it gets for now (it then
takes its pieces as one run). ``count`` hears of every write, which is what drives the measurement,
and ``answered`` of every request's answer time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Literal

FIRST = 4
# A window is this many of the requests' answer times (the time to a response's headers: a new
# connection's handshake and request, and the server's reply), and at least MIN_WINDOW_S. Every step
# costs a window of grace and one of measuring, on the fake loopback hub (answers in ~10 ms on 2
# busy cores) 1 GB in 4 shards took 1.12 s with 0.1 s windows, 1.07 s with 0.05 s, and 1.98 s and
# 1.84 s when each connection is capped at 40 MB/s.
ROUND_TRIPS = 4
MIN_WINDOW_S = 0.05
_ANSWERS_KEPT = 8  # the window follows the median of the last few answer times
# A doubling must raise the speed by this much to be kept (a capped connection's doubling gives ~2x).
GAIN = 1.25
# A doubling that raised the speed this much found no limit but the connections: the next step is x4.
# (Measured: 2.0x from 4 to 8 connections capped at 40 MB/s; 1.0-1.4x on the uncapped loopback hub.)
LEAP = 1.8
REPROBE_S = 5.0

_Phase = Literal["starting", "measuring", "grace", "doubled", "settled", "full"]


class ConnectionBudget:
    def __init__(
        self,
        *,
        most: int,
        owners: int = 1,
        first: int = FIRST,
        min_window_s: float = MIN_WINDOW_S,
        round_trips: float = ROUND_TRIPS,
        gain: float = GAIN,
        leap: float = LEAP,
        reprobe_s: float = REPROBE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.most = max(1, most)
        self.owners = max(1, owners)  # files expected to fetch at once
        self._seen: set[object] = set()  # owners that asked for a slot so far
        self.allowed = min(self.most, max(1, first))
        self.min_window_s = min_window_s
        self.round_trips = round_trips
        self._answers: deque[float] = deque(maxlen=_ANSWERS_KEPT)  # seconds to a response's headers
        self.gain = gain
        self.leap = leap
        self.reprobe_s = reprobe_s
        self._clock = clock
        # The first window is grace too: connections start a few ms apart, and the first bytes of each come
        # after its request is answered, so the first window would measure less than they carry.
        self._phase: _Phase = "full" if self.allowed >= self.most else "starting"
        self._active = 0
        self._held: Counter[object] = Counter()  # slots held, per owner
        self._waiting: Counter[object] = Counter()  # threads waiting for one, per owner
        self._changed = threading.Condition()
        self._window_start: float | None = None  # None: the window starts at the next write
        self._window_bytes = 0
        self._rate_before = 0.0  # bytes/s of the window before the last step up
        self._allowed_before = self.allowed  # before the last step up: gone back to if it did not pay
        self._probe_at = 0.0
        self._began: float | None = None  # when the first bytes were written

    # --- the semaphore side -------------------------------------------------------------------------
    # Each slot is taken for an ``owner`` (a file): a file with no connection goes before one that has
    # some, so that every file in flight gets one before any gets a second, and a file's bytes keep
    # coming in order for its hash to follow.
    def acquire(self, timeout: float | None = None, owner: object = None) -> bool:
        """Take a slot; False if none came within ``timeout`` seconds."""
        with self._changed:
            self._seen.add(owner)
            self._waiting[owner] += 1
            try:
                if not self._changed.wait_for(lambda: self._may_take(owner), timeout):
                    return False
            finally:
                self._waiting[owner] -= 1
                if not self._waiting[owner]:
                    del self._waiting[owner]
            self._active += 1
            self._held[owner] += 1
            return True

    def release(self, owner: object = None) -> None:
        with self._changed:
            self._active -= 1
            self._held[owner] -= 1
            if not self._held[owner]:
                del self._held[owner]
            self._changed.notify_all()

    def keep(self, owner: object = None) -> bool:
        """Between pieces: True if ``owner`` may keep its slot for the next one (its connection stays
        busy, kept alive); False, with the slot released, if the number shrank or a file waits that has
        no connection while this one has others."""
        with self._changed:
            starving = any(not self._held.get(other) for other in self._waiting if other != owner)
            if self._active <= self.allowed and not (starving and self._held[owner] > 1):
                return True
        self.release(owner)
        return False

    def alone(self, owner: object) -> bool:
        """True if ``owner`` holds one slot and none is free: for now its one connection is all it gets."""
        with self._changed:
            return self._held.get(owner, 0) <= 1 and self._active >= self.allowed

    def _may_take(self, owner: object) -> bool:
        if self._active >= self.allowed:
            return False
        # One without a connection may always take a free slot; one with some only if nobody waits
        # that has none, and, until every file expected has asked or the first window was measured,
        # not past its share (files start a few ms apart, and the first would take every slot).
        held = self._held.get(owner, 0)
        if not held:
            return True
        if not all(self._held.get(other) for other in self._waiting):
            return False
        return self._rate_before > 0 or len(self._seen) >= self.owners or held < -(-self.allowed // self.owners)

    # --- the measuring side ---------------------------------------------------------------------------
    def answered(self, seconds: float) -> None:
        """A request was answered (its response's headers came) ``seconds`` after it was sent."""
        with self._changed:
            self._answers.append(seconds)

    def window_s(self) -> float:
        """How long a window lasts now: a few answer times, and at least the minimum."""
        answers = sorted(self._answers)
        typical = answers[len(answers) // 2] if answers else 0.0
        return max(self.min_window_s, self.round_trips * typical)

    def count(self, nbytes: int) -> None:
        """``nbytes`` more were written; at the end of a window, decide how many connections to allow."""
        if self._phase == "full":
            return
        with self._changed:
            now = self._clock()
            if self._began is None:
                self._began = now
            if self._phase == "settled":
                if now < self._probe_at:
                    return
                self._phase, self._window_start = "measuring", None  # measure afresh, then double once more
            if self._window_start is None:
                self._window_start, self._window_bytes = now, 0
                return
            self._window_bytes += nbytes
            elapsed = now - self._window_start
            if elapsed < max(self.window_s(), (now - self._began) / 10):
                return
            rate = self._window_bytes / elapsed
            self._window_start, self._window_bytes = now, 0
            if self._phase in ("starting", "grace"):
                # The connections are up: the next window measures them.
                self._phase = "measuring" if self._phase == "starting" else "doubled"
                return
            if self._phase == "doubled":
                if rate < self._rate_before * self.gain:
                    self.allowed = self._allowed_before  # that step did not pay: undo it
                    self._phase, self._probe_at = "settled", now + self.reprobe_s
                    return
                if self.allowed >= self.most:
                    self._phase = "full"  # it paid, and there is no more to try
                    return
            leaping = self._phase == "doubled" and rate >= self._rate_before * self.leap
            self._rate_before, self._allowed_before = rate, self.allowed
            self.allowed = min(self.most, self.allowed * (4 if leaping else 2))
            self._phase = "grace"
            self._changed.notify_all()

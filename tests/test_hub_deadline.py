"""The overall deadline on one Hub answer: a trickle ends, an answer in time is whole."""

from __future__ import annotations

import pytest

from nemolaunch.errors import EXIT_HUB, HubTooSlow, describe
from nemolaunch.hub.deadline import Deadline


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_body_that_comes_in_time_is_returned_whole() -> None:
    clock = Clock()
    deadline = Deadline(5, endpoint="http://hub", what="the listing of a/b", clock=clock)

    def chunks():
        for piece in (b"ab", b"cd", b"e"):
            clock.now += 1  # 3 s of the 5 allowed
            yield piece

    assert deadline.read_body(chunks()) == b"abcde"
    assert deadline.left_s() == pytest.approx(2)


def test_a_trickle_past_the_deadline_is_refused_in_one_line_saying_how_much_came() -> None:
    clock = Clock()
    deadline = Deadline(3, endpoint="http://hub", what="the listing of a/b", clock=clock)

    def trickle():
        while True:  # never ends by itself: only the deadline stops it
            clock.now += 1
            yield b"x"

    with pytest.raises(HubTooSlow) as caught:
        deadline.read_body(trickle())
    code, message = describe(caught.value)
    assert code == EXIT_HUB
    assert message == (
        "the Hugging Face Hub at http://hub sent 3 bytes of the listing of a/b in 3 s and had not finished: it "
        "(or a proxy between) is too slow; check the network or proxy, or wait longer with "
        "NEMOLAUNCH_HUB_DEADLINE=SECONDS"
    )


def test_an_answer_over_the_cap_is_refused_not_kept_in_memory() -> None:
    deadline = Deadline(60, endpoint="http://hub", what="the listing of a/b")
    with pytest.raises(ValueError, match="over 10 bytes"):
        deadline.read_body(iter([b"x" * 8, b"x" * 8]), limit=10)


def test_each_network_wait_gets_what_is_left_and_never_no_limit() -> None:
    clock = Clock()
    deadline = Deadline(2, endpoint="http://hub", what="w", clock=clock)
    assert deadline.timeout() == pytest.approx(2)
    clock.now += 5
    assert deadline.timeout() > 0  # httpx takes 0 (or None) as no limit at all

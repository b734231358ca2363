"""The connection budget's decisions, driven by a clock the test turns: bytes written per window."""

from __future__ import annotations

import threading

from nemolaunch.hub.connection_budget import ConnectionBudget

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_for(
    budget: ConnectionBudget, clock: Clock, seconds: float, *, mb_per_connection: float, cap_mb: float | None = None
) -> list[int]:
    """Writes for ``seconds``, in steps of 0.01 s, each by the connections allowed at that moment: each
    brings ``mb_per_connection`` MB/s, the whole link at most ``cap_mb`` MB/s. Returns the numbers
    allowed, in the order they came."""
    seen = [budget.allowed]
    for _ in range(round(seconds / 0.01)):
        clock.now += 0.01
        total = mb_per_connection * budget.allowed
        budget.count(int(min(total, cap_mb or total) * MB * 0.01))
        if budget.allowed != seen[-1]:
            seen.append(budget.allowed)
    return seen


def started(clock: Clock, most: int, *, answered_in: float | None = None) -> ConnectionBudget:
    """A budget whose windows last 0.1 s (or four answer times of ``answered_in`` seconds)."""
    budget = ConnectionBudget(most=most, clock=clock, min_window_s=0.1)
    if answered_in is not None:
        budget.answered(answered_in)
    budget.count(1)  # the first write starts the first window
    return budget


def test_capped_connections_leap_to_the_most() -> None:
    clock = Clock()
    budget = started(clock, most=32)
    # 40 MB/s a connection: each one more adds its cap. A window of grace (the connections' first
    # bytes) and one to measure, at the start and after each step; the first doubling doubled the
    # speed, so the next step is x4.
    assert run_for(budget, clock, 0.35, mb_per_connection=40) == [4, 8]
    assert run_for(budget, clock, 0.1, mb_per_connection=40) == [8, 32]
    assert run_for(budget, clock, 2.0, mb_per_connection=40) == [32]


def test_a_far_servers_windows_last_a_few_of_its_answer_times() -> None:
    clock = Clock()
    budget = started(clock, most=32, answered_in=0.25)
    # Windows of 1 s, not 0.1: the first doubling comes after two, the leap after two more.
    assert run_for(budget, clock, 1.95, mb_per_connection=40) == [4]
    assert run_for(budget, clock, 0.1, mb_per_connection=40) == [4, 8]
    assert run_for(budget, clock, 2.0, mb_per_connection=40) == [8, 32]
    # The window follows the median of the last answers: a single slow one does not stretch it.
    for seconds in (0.01, 0.01, 0.01, 5.0):
        budget.answered(seconds)
    assert budget.window_s() == 0.1


def test_a_doubling_that_pays_but_not_twice_over_doubles_again() -> None:
    clock = Clock()
    budget = started(clock, most=32)
    # The link carries 240 MB/s: 8 connections bring 1.5x (paid, not a leap), 16 nothing (undone).
    assert run_for(budget, clock, 1.0, mb_per_connection=40, cap_mb=240) == [4, 8, 16, 8]


def test_a_leap_that_did_not_pay_goes_back_to_the_number_before_it() -> None:
    clock = Clock()
    budget = started(clock, most=32)
    # 8 connections doubled the speed, 32 bring only 10 % more than 8 on a 350 MB/s link.
    assert run_for(budget, clock, 1.0, mb_per_connection=40, cap_mb=350) == [4, 8, 32, 8]


def test_a_step_up_to_the_most_is_undone_too_when_it_did_not_pay() -> None:
    clock = Clock()
    budget = started(clock, most=8)
    assert run_for(budget, clock, 1.0, mb_per_connection=40, cap_mb=190) == [4, 8, 4]


def test_a_link_that_is_full_goes_back_to_the_number_before_the_useless_doubling() -> None:
    clock = Clock()
    budget = started(clock, most=32)
    # 4 connections fill a 1 GB/s link; 8 bring no more; and it stays at 4, not re-deciding each window.
    assert run_for(budget, clock, 4.5, mb_per_connection=400, cap_mb=1000) == [4, 8, 4]


def test_it_tries_again_later_when_the_link_has_changed() -> None:
    clock = Clock()
    budget = started(clock, most=32)
    assert run_for(budget, clock, 1.0, mb_per_connection=400, cap_mb=1000) == [4, 8, 4]
    # Then the link no longer limits: each connection is capped at 40 MB/s. After the pause, it grows
    # again, over windows a tenth of the download's age.
    assert run_for(budget, clock, 4.0, mb_per_connection=40) == [4]
    assert run_for(budget, clock, 10.0, mb_per_connection=40) == [4, 8, 32]


def test_a_budget_no_larger_than_the_start_is_whole_from_the_first_piece() -> None:
    budget = ConnectionBudget(most=3, clock=Clock())
    assert budget.allowed == 3
    assert all(budget.acquire(timeout=0) for _ in range(3))
    assert not budget.acquire(timeout=0)


def test_a_doubling_wakes_threads_waiting_for_a_slot() -> None:
    clock = Clock()
    budget = started(clock, most=8)
    for _ in range(4):
        assert budget.acquire(timeout=0)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(budget.acquire(timeout=5)))
    waiter.start()
    run_for(budget, clock, 0.21, mb_per_connection=40)
    waiter.join(timeout=5)
    assert got == [True]


def test_until_every_file_has_asked_none_takes_more_than_its_share() -> None:
    # Files start a few ms apart: the first must not take every slot before the others ask.
    budget = ConnectionBudget(most=32, owners=2, clock=Clock())  # 4 allowed at first: 2 each
    assert budget.acquire(timeout=0, owner="a")
    assert budget.acquire(timeout=0, owner="a")
    assert not budget.acquire(timeout=0, owner="a")
    assert budget.acquire(timeout=0, owner="b")
    assert budget.acquire(timeout=0, owner="a")  # both have asked: a free slot goes to whoever asks
    # No slot is free: b's one connection is all it gets for now (a run of pieces); a has three.
    assert budget.alone("b") and not budget.alone("a")

"""The rule that decides whether a batch waits for more requests, and the traffic estimate it reads.

Both are plain functions of numbers; times here are nanoseconds chosen by the test. A deadline 5 ms
after the oldest request's arrival is what ``max_queue_delay_ms: 5`` gives.
"""

from __future__ import annotations

import itertools
import math

import pytest

from modelserve.batching.delay import Traffic, hold_until

MS = 1_000_000
ARRIVED = 1000 * MS  # the oldest request of the batch arrived then
DEADLINE = ARRIVED + 5 * MS


def hold(
    now: int,
    *,
    missing: int = 7,
    in_flight: int = 1,
    population: float = 32,
    last: int = ARRIVED,
    gap: float = 0.1 * MS,
) -> int | None:
    return hold_until(
        now, DEADLINE, missing=missing, in_flight=in_flight, population=population, last_arrival_ns=last, gap_ns=gap
    )


# -- hold_until ---------------------------------------------------------------------------------------


def test_a_lone_client_whose_request_is_the_whole_population_is_never_held() -> None:
    # One client calling in a loop: its one request is all there is, however fast it calls.
    assert hold(ARRIVED, population=1, in_flight=1, gap=0.3 * MS) is None


def test_a_batch_runs_as_soon_as_every_client_of_the_population_is_in_flight() -> None:
    assert hold(ARRIVED + MS, population=4, in_flight=4) is None
    assert hold(ARRIVED + MS, population=4, in_flight=3) is not None


def test_while_clients_can_still_come_and_come_fast_the_batch_waits() -> None:
    # Arrivals every 0.1 ms; nobody arrived since the oldest request: look again at the silence's
    # limit, halfway to the deadline, where another 2.5 ms of nothing would outlast what is left.
    assert hold(ARRIVED, gap=0.1 * MS) == ARRIVED + 2_500_000
    # Someone arrived 0.2 ms ago: the limit moves with the last arrival.
    assert hold(ARRIVED + 3 * MS, last=ARRIVED + 2_800_000, gap=0.1 * MS) == ARRIVED + 3_900_000


def test_near_the_deadline_the_expected_gap_limits_the_wait() -> None:
    # A gap of 1.5 ms: an arrival is expected in time only up to 1.5 ms before the deadline.
    assert hold(ARRIVED + 3_200_000, last=ARRIVED + 3 * MS, gap=1.5 * MS) == ARRIVED + 3_500_000


def test_arrivals_slower_than_what_is_left_of_the_delay_run_the_batch_now() -> None:
    assert hold(ARRIVED, gap=6 * MS) is None
    assert hold(ARRIVED + 4 * MS, last=ARRIVED + 4 * MS, gap=1.5 * MS) is None


def test_a_silence_longer_than_the_rest_of_the_delay_runs_the_batch_now() -> None:
    # Arrivals were every 0.1 ms, but none came for the last 2.6 ms, with 2.4 ms left.
    assert hold(ARRIVED + 2_600_000, gap=0.1 * MS) is None


def test_a_full_batch_or_a_passed_deadline_runs_now() -> None:
    assert hold(ARRIVED, missing=0) is None
    assert hold(ARRIVED, missing=-3) is None  # a request larger than what was missing
    assert hold(DEADLINE) is None
    assert hold(DEADLINE + 1) is None


def test_before_the_population_is_known_the_configured_delay_holds() -> None:
    assert hold(ARRIVED, population=math.inf, gap=math.inf) == DEADLINE
    assert hold(ARRIVED + 4 * MS, population=math.inf, gap=6 * MS) == DEADLINE
    assert hold(ARRIVED, population=math.inf, missing=0) is None


def test_the_time_to_look_again_is_always_after_now_and_never_after_the_deadline() -> None:
    # After now: a wake-up at ``now`` would look again without time having moved, forever.
    nows = [ARRIVED + i * MS // 4 for i in range(21)]
    gaps = [1.0, 0.05 * MS, 0.3333 * MS, 1.2 * MS, 4.9 * MS, 7 * MS, math.inf]
    for now, gap, back, in_flight in itertools.product(nows, gaps, (0, MS // 3, 3 * MS), (1, 5, 9)):
        last = max(ARRIVED, now - back)
        until = hold(now, gap=gap, last=last, in_flight=in_flight, population=8)
        if until is not None:
            assert now < until <= DEADLINE, (now, gap, last, until)


# -- Traffic ------------------------------------------------------------------------------------------


def test_the_gap_estimate_starts_at_the_first_gap_and_then_moves_an_eighth_of_the_way() -> None:
    traffic = Traffic(window=100)
    traffic.arrived(ARRIVED, 1)
    assert traffic.gap_ns == math.inf
    traffic.arrived(ARRIVED + 100, 1)
    traffic.arrived(ARRIVED + 200, 1)
    assert traffic.gap_ns == 100
    traffic.arrived(ARRIVED + 1100, 1)  # a gap of 900
    assert traffic.gap_ns == 200
    assert traffic.last_ns == ARRIVED + 1100


def test_the_population_is_unknown_for_a_window_then_the_most_in_flight_at_once() -> None:
    traffic = Traffic(window=4)
    for in_flight in (1, 3, 2):
        traffic.arrived(ARRIVED, in_flight)
        assert traffic.population == math.inf
    traffic.arrived(ARRIVED, 1)
    assert traffic.population == 3


def test_a_peak_counts_until_the_window_after_its_own_ends() -> None:
    traffic = Traffic(window=4)
    for in_flight in (1, 6, 2, 1):  # the first window: a peak of 6
        traffic.arrived(ARRIVED, in_flight)
    for in_flight in (1, 1, 1):
        traffic.arrived(ARRIVED, in_flight)
        assert traffic.population == 6
    traffic.arrived(ARRIVED, 1)  # the second window ends, and the first window's peak with it
    assert traffic.population == 1
    traffic.arrived(ARRIVED, 2)
    assert traffic.population == 2


def test_a_window_holds_at_least_one_request() -> None:
    with pytest.raises(ValueError, match="at least one request"):
        Traffic(window=0)

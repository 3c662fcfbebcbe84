"""The rollout's plain logic: the split's exact shares and what a check concludes from two windows."""

from __future__ import annotations

import pytest

from modelserve.rollout.analysis import Outcome, Split, Thresholds, Window, judge

LIMITS = Thresholds(max_error_rate=0.01, max_latency_ratio=1.5, min_samples=20)
MS = 1_000_000


@pytest.mark.parametrize("weight", [0, 1, 7, 10, 33, 50, 99, 100])
def test_any_100_consecutive_requests_give_the_new_version_exactly_its_weight(weight: int) -> None:
    split = Split(stable=1, new=2, weight=weight)
    chosen = [split.choose() for _ in range(1000)]

    for start in range(0, 900, 37):
        assert chosen[start : start + 100].count(2) == weight


def test_a_small_weight_is_spread_evenly_not_sent_in_a_burst() -> None:
    split = Split(stable=1, new=2, weight=10)
    chosen = [split.choose() for _ in range(100)]

    assert [i for i, v in enumerate(chosen) if v == 2] == list(range(9, 100, 10))


def _window(requests: int, failures: int = 0, latency_ms: float = 1.0) -> Window:
    return Window(requests, failures, [int(latency_ms * MS)] * (requests - failures))


def test_a_check_waits_for_the_minimum_sample_count() -> None:
    verdict = judge(_window(19), _window(200), None, LIMITS)

    assert verdict.outcome is Outcome.WAIT
    assert verdict.reason == "19 of 20 requests needed for a check"


def test_failures_breach_before_the_minimum_when_no_success_could_bring_the_rate_back() -> None:
    verdict = judge(_window(5, failures=1), _window(50), None, LIMITS)

    assert (verdict.outcome, verdict.cause) == (Outcome.BREACH, "error_rate")
    assert "error rate 20.00% (1 of 5 requests failed in the model)" in verdict.reason


def test_an_error_rate_within_the_threshold_passes() -> None:
    assert judge(_window(200, failures=2), _window(200), None, LIMITS).outcome is Outcome.PASS
    assert judge(_window(200, failures=3), _window(200), None, LIMITS).outcome is Outcome.BREACH


def test_a_latency_above_the_ratio_breaches_at_once_and_one_within_passes() -> None:
    slow, stable = _window(50, latency_ms=3.1), _window(50, latency_ms=2.0)
    breach = judge(slow, stable, None, LIMITS)
    close = judge(_window(50, latency_ms=2.9), stable, None, LIMITS)

    assert (breach.outcome, breach.cause, breach.figures["latency_ratio"]) == (Outcome.BREACH, "latency", 1.55)
    assert breach.reason.startswith("p99 latency 3.10 ms is 1.55x the stable version's 2.00 ms")
    assert (close.outcome, close.figures["latency_ratio"]) == (Outcome.PASS, 1.45)


def test_with_latency_windows_a_breach_holds_until_it_is_seen_in_that_many_windows_in_a_row() -> None:
    slow, stable = _window(50, latency_ms=3.1), _window(50, latency_ms=2.0)
    twice = Thresholds(0.01, 1.5, 20, latency_windows=2)
    first = judge(slow, stable, None, twice)
    second = judge(slow, stable, None, twice, latency_strikes=1)

    assert (first.outcome, first.cause) == (Outcome.HOLD, "latency")
    assert first.reason.endswith("above the maximum ratio 1.5 (1 of 2 windows in a row roll it back)")
    assert (second.outcome, second.cause) == (Outcome.BREACH, "latency")


def test_a_few_stalled_requests_of_the_new_version_are_within_the_p99_estimate() -> None:
    # Three of a hundred: its window's p99 is ten times the stable one's, its p99 may well not be.
    stalled = Window(100, 0, [2 * MS] * 97 + [20 * MS] * 3)
    verdict = judge(stalled, _window(100, latency_ms=2.0), None, LIMITS)

    assert verdict.figures["latency_ratio"] > 5
    assert verdict.outcome is Outcome.PASS


def test_without_enough_stable_requests_the_baseline_is_the_yardstick() -> None:
    # At 100 % the stable version answers nothing: its p99 from the last window that had enough stands.
    verdict = judge(_window(50, latency_ms=4.0), _window(3, latency_ms=1.0), 0.002, LIMITS)

    assert (verdict.outcome, verdict.figures["stable_p99_ms"], verdict.figures["latency_ratio"]) == (
        Outcome.BREACH,
        2.0,
        2.0,
    )
    assert judge(_window(50, latency_ms=4.0), _window(0), None, LIMITS).outcome is Outcome.PASS


def test_a_stall_that_hides_a_slow_version_at_the_p99_does_not_hide_it_at_the_median() -> None:
    slow = _window(100, latency_ms=3.2)
    stalled = Window(100, 0, [2 * MS] * 97 + [20 * MS] * 3)  # three stalled requests of the stable version

    verdict = judge(slow, stalled, None, LIMITS)

    assert verdict.figures["latency_ratio"] < 1.5
    assert (verdict.outcome, verdict.figures["median_ratio"]) == (Outcome.BREACH, 1.6)
    assert verdict.reason.startswith("median latency 3.20 ms is 1.60x the stable version's 2.00 ms (at least 1.60x")

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


def test_a_p99_above_the_ratio_breaches_in_the_second_window_in_a_row_and_one_within_passes() -> None:
    slow, stable = _window(50, latency_ms=3.1), _window(50, latency_ms=2.0)
    first = judge(slow, stable, None, LIMITS)
    second = judge(slow, stable, None, LIMITS, latency_strikes=1)
    close = judge(_window(50, latency_ms=2.9), stable, None, LIMITS)

    assert (first.outcome, first.cause, first.figures["latency_ratio"]) == (Outcome.HOLD, "latency", 1.55)
    assert first.reason.endswith("above the maximum ratio 1.5 (1 of 2 windows in a row roll it back)")
    assert (second.outcome, second.cause) == (Outcome.BREACH, "latency")
    assert (close.outcome, close.figures["latency_ratio"]) == (Outcome.PASS, 1.45)
    at_once = Thresholds(0.01, 1.5, 20, latency_windows=1)
    assert judge(slow, stable, None, at_once).outcome is Outcome.BREACH


def test_without_enough_stable_requests_the_baseline_is_the_yardstick() -> None:
    # At 100 % the stable version answers nothing: its p99 from the last window that had enough stands.
    verdict = judge(_window(50, latency_ms=4.0), _window(3, latency_ms=1.0), 0.002, LIMITS, latency_strikes=1)

    assert (verdict.outcome, verdict.figures["stable_p99_ms"], verdict.figures["latency_ratio"]) == (
        Outcome.BREACH,
        2.0,
        2.0,
    )
    assert judge(_window(50, latency_ms=4.0), _window(0), None, LIMITS).outcome is Outcome.PASS

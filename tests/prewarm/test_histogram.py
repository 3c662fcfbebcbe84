"""hybrid-histogram: idle-time percentiles become the pre-warm and keep-alive windows, as Shahrad et al. say."""

from __future__ import annotations

import pytest

from modelserve.prewarm.histogram import FIXED, FIXED_KEEP_ALIVE, HybridHistogramPolicy, IdleTimeHistogram
from modelserve.prewarm.policy import ModelInfo
from modelserve.prewarm.simulator import Simulator, simulate
from modelserve.prewarm.traces import Trace


def test_a_regular_idle_time_gives_head_and_tail_windows_with_the_papers_margins() -> None:
    histogram = IdleTimeHistogram()
    for _ in range(20):
        histogram.add(630.0)  # every idle time in the 10-minute bin [600, 660)
    windows = histogram.windows()
    assert windows.prewarm == pytest.approx(600 * 0.9)  # the head bin's lower edge, less 10 %
    assert windows.keep_alive == pytest.approx(660 * 1.1 - 600 * 0.9)  # to the tail bin's upper edge, plus 10 %


def test_short_idle_times_keep_the_model_loaded_instead_of_pre_warming() -> None:
    histogram = IdleTimeHistogram()
    for _ in range(20):
        histogram.add(20.0)
    assert histogram.windows().prewarm == 0.0
    assert histogram.windows().keep_alive == pytest.approx(60 * 1.1)


def test_too_few_or_spread_out_or_out_of_range_idle_times_fall_back_to_the_fixed_keep_alive() -> None:
    few = IdleTimeHistogram()
    for _ in range(5):
        few.add(630.0)
    assert few.windows() == FIXED
    spread = IdleTimeHistogram()
    for minute in range(240):
        spread.add(minute * 60.0 + 1)
    assert spread.windows() == FIXED
    beyond = IdleTimeHistogram()
    for _ in range(20):
        beyond.add(5 * 3600.0)
    assert beyond.windows() == FIXED
    assert FIXED.keep_alive == FIXED_KEEP_ALIVE == 4 * 3600.0


def test_a_model_is_unloaded_after_its_request_and_pre_warmed_before_the_next() -> None:
    models = {"a": ModelInfo("a", 100.0, 10.0)}
    arrivals = Trace.from_arrivals([(600.0 * i + 5.0 * (i % 2), "a") for i in range(40)])
    result = simulate(arrivals, models, 1000, HybridHistogramPolicy())
    # Until the histogram holds 10 idle times the model stays loaded (fixed keep-alive); from then on it is
    # unloaded after each request and loaded again 486 s later (595 s idle times fill the 9-minute bin), READY
    # well before the next request at 595 or 605 s.
    assert result.cold_starts == 1
    assert result.loads > 25
    span = arrivals.times[-1] - arrivals.times[0]
    assert result.idle_memory_mb_seconds < 0.5 * 100 * span


def test_it_shows_its_windows_as_planned_steps_with_reasons_and_a_forecast() -> None:
    policy = HybridHistogramPolicy()
    view = Simulator({"a": ModelInfo("a", 100.0, 10.0)}, 1000, policy).cache
    for i in range(20):
        last = 630.0 * i
        policy.on_arrival("a", last, view)
    load, evict = policy.planned(last, view)
    assert (load.action, load.model, load.at) == ("load", "a", pytest.approx(last + 540.0))
    assert "pre-warm window: 540 s" in load.reason
    assert (evict.action, evict.at) == ("evict", pytest.approx(last + 726.0))  # 660 s + 10 %
    assert "99th percentile" in evict.reason
    forecast = policy.forecast("a", last)
    assert forecast.next_arrival == pytest.approx(last + 600.0)  # the head bin's lower edge
    assert policy.forecast("b", last).next_arrival is None
    due = policy.tick(last + 540.0, view)
    assert due.load == ("a",)
    assert due.reason("a") == load.reason

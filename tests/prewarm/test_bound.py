"""The lower bound on cold starts: its closed forms, its limits, and that no policy goes below it."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.prewarm.bound import burst_extra, cold_start_bound
from modelserve.prewarm.generators import DAY, Shape, generate, held_out, unforeseeable
from modelserve.prewarm.histogram import HybridHistogramPolicy
from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.predictive import PredictivePolicy
from modelserve.prewarm.simulator import simulate


@pytest.mark.parametrize(("burst", "load_seconds"), [(30.0, 2.0), (30.0, 20.0), (4.0, 12.0)])
def test_burst_extra_matches_bursts_drawn_as_the_generator_draws_them(burst: float, load_seconds: float) -> None:
    rng = np.random.default_rng(0)
    counts = [
        int((np.cumsum(rng.exponential(5.0, rng.geometric(1 / burst) - 1)) < load_seconds).sum()) for _ in range(40000)
    ]
    assert burst_extra(burst, 5.0, load_seconds) == pytest.approx(np.mean(counts), rel=0.03)
    assert burst_extra(1.0, 5.0, load_seconds) == 0.0


def test_unforeseeable_rates_account_for_the_bursts_of_the_trace() -> None:
    shape = held_out(Shape())
    trace, _ = generate("diurnal", seed=5, models=20, days=3, shape=shape)
    truths = unforeseeable("diurnal", seed=5, models=20, days=3, shape=shape)
    times = np.arange(0.0, 3 * DAY, 60.0) + 30.0
    expected = sum(float(t.rate(times).sum()) * 60.0 for t in truths.values())
    assert len(truths) == 20
    assert len(trace) == pytest.approx(expected, rel=0.05)
    assert unforeseeable("periodic", seed=5, models=20, days=3) == {}


def test_the_bound_falls_with_the_budget_and_rises_with_a_tighter_idle_cap() -> None:
    truths = unforeseeable("bursty", seed=5, models=30, days=2)
    _, catalogue = generate("bursty", seed=5, models=30, days=2)
    total = sum(m.size_mb for m in catalogue.values())
    small, large = (cold_start_bound(truths, catalogue, total * share, 2 * DAY) for share in (0.1, 0.4))
    assert small.cold_starts > large.cold_starts > 0.0
    assert cold_start_bound(truths, catalogue, total, 2 * DAY).cold_starts == pytest.approx(0.0, abs=1e-6)
    starts = sum(float(t.rate(np.zeros(1))[0]) for t in truths.values()) * 2 * DAY
    starved = cold_start_bound(truths, catalogue, total, 2 * DAY, idle_mb_seconds=0.0)
    assert starved.idle_limited == pytest.approx(starts, rel=1e-6)
    roomy = cold_start_bound(truths, catalogue, total, 2 * DAY, idle_mb_seconds=total * DAY)
    assert 0.0 < roomy.cold_starts < starved.cold_starts


@pytest.mark.parametrize(("family", "share"), [("bursty", 0.25), ("rare", 0.25), ("office", 0.3)])
def test_no_policy_goes_below_the_bound(family: str, share: float) -> None:
    shape = held_out(Shape())
    trace, catalogue = generate(family, seed=5, models=40, days=3, shape=shape)
    budget = share * sum(m.size_mb for m in catalogue.values())
    results = [
        simulate(trace, catalogue, budget, p) for p in (LRUPolicy(), HybridHistogramPolicy(), PredictivePolicy())
    ]
    hybrid = results[1]
    truths = unforeseeable(family, seed=5, models=40, days=3, shape=shape)
    bound = cold_start_bound(truths, catalogue, budget, 3 * DAY, hybrid.idle_memory_mb_seconds)
    assert bound.held > 0.0
    for result in results:
        assert result.cold_starts >= bound.held, result.policy
        if result.idle_memory_mb_seconds <= hybrid.idle_memory_mb_seconds:
            assert result.cold_starts >= bound.cold_starts, result.policy

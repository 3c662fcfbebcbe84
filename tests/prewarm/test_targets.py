"""The targets of docs/PREWARM.md on held-out traces: a seed and parameters the policy was not tuned on."""

from __future__ import annotations

from modelserve.prewarm.generators import Shape, generate, held_out
from modelserve.prewarm.histogram import HybridHistogramPolicy
from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.predictive import PredictivePolicy
from modelserve.prewarm.simulator import simulate


def test_predictive_beats_lru_and_hybrid_histogram_on_a_held_out_periodic_family() -> None:
    trace, models = generate("periodic", seed=5, models=30, days=2, shape=held_out(Shape()))
    budget = 0.25 * sum(m.size_mb for m in models.values())
    lru = simulate(trace, models, budget, LRUPolicy())
    hybrid = simulate(trace, models, budget, HybridHistogramPolicy())
    ours = simulate(trace, models, budget, PredictivePolicy())
    assert ours.cold_start_rate <= 0.5 * lru.cold_start_rate
    assert ours.cold_start_rate < hybrid.cold_start_rate
    assert ours.idle_memory_mb_seconds <= hybrid.idle_memory_mb_seconds


def test_predictive_keeps_the_busiest_models_of_the_hour_on_a_held_out_diurnal_family() -> None:
    # Random requests at a rate that follows the day: nothing foresees one, so what counts is which models
    # the budget holds at each hour. lru holds the last used; the resident set the most requested per MB.
    trace, models = generate("diurnal", seed=5, models=50, days=3, shape=held_out(Shape()))
    budget = 0.25 * sum(m.size_mb for m in models.values())
    lru = simulate(trace, models, budget, LRUPolicy())
    hybrid = simulate(trace, models, budget, HybridHistogramPolicy())
    ours = simulate(trace, models, budget, PredictivePolicy())
    assert ours.cold_start_rate <= 0.75 * lru.cold_start_rate
    assert ours.cold_start_rate < 0.8 * hybrid.cold_start_rate
    assert ours.idle_memory_mb_seconds <= hybrid.idle_memory_mb_seconds


def test_predictive_holds_daily_models_around_their_hour_on_a_held_out_rare_family() -> None:
    trace, models = generate("rare", seed=5, models=100, days=4, shape=held_out(Shape()))
    budget = 0.25 * sum(m.size_mb for m in models.values())
    lru = simulate(trace, models, budget, LRUPolicy())
    hybrid = simulate(trace, models, budget, HybridHistogramPolicy())
    ours = simulate(trace, models, budget, PredictivePolicy())
    assert ours.cold_start_rate <= 0.8 * lru.cold_start_rate
    assert ours.cold_start_rate < hybrid.cold_start_rate
    assert ours.idle_memory_mb_seconds <= 0.9 * hybrid.idle_memory_mb_seconds

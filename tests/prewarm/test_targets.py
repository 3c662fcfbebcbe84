"""The targets of docs/PREWARM.md on a held-out trace: a seed and parameters the policy was not tuned on."""

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

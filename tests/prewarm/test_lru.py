"""The baseline evicts the model whose last request is oldest, and nothing else."""

from __future__ import annotations

from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.policy import ModelInfo
from modelserve.prewarm.simulator import Simulator, simulate
from modelserve.prewarm.traces import Trace

MODELS = {name: ModelInfo(name, 10.0, 1.0) for name in "abc"}


def test_the_least_recently_requested_model_is_evicted() -> None:
    # Room for two. a, b, then a again: when c needs room, b is the older, so b goes and a stays.
    arrivals = Trace.from_arrivals([(0, "a"), (10, "b"), (20, "a"), (30, "c"), (40, "a"), (50, "b")])
    result = simulate(arrivals, MODELS, 20, LRUPolicy())
    # Cold: a, b, c (first requests) and b at 50 (evicted for c); a at 20 and 40 stays warm.
    assert result.cold_starts == 4
    assert result.evictions == 2  # b for c, then the oldest of a and c (c, requested at 30) for b


def test_lru_ranks_candidates_by_last_request() -> None:
    policy = LRUPolicy()
    simulator = Simulator(MODELS, 100, policy)
    simulator.run(Trace.from_arrivals([(0, "a"), (1, "b"), (2, "c"), (3, "a")]))
    assert policy.eviction_order(4.0, simulator.cache, ["a", "b", "c"]) == ["b", "c", "a"]

"""The simulator's Definitions, on traces small enough to work out by hand."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from modelserve.prewarm.histogram import HybridHistogramPolicy
from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.policy import CPU, GPU, CacheView, Decision, ModelInfo, Policy
from modelserve.prewarm.predictive import PredictivePolicy
from modelserve.prewarm.simulator import simulate
from modelserve.prewarm.traces import Trace

A = ModelInfo("a", 10.0, 5.0)
B = ModelInfo("b", 10.0, 5.0)
MODELS = {"a": A, "b": B}


def trace(*arrivals: tuple[float, str]) -> Trace:
    return Trace.from_arrivals(arrivals)


class WatchedLRU(LRUPolicy):
    """LRU that writes down the memory in use every time it is told something."""

    def __init__(self) -> None:
        super().__init__()
        self.used: list[float] = []

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        self.used.append(view.used_mb)
        return super().on_arrival(model, now, view)

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        self.used.append(view.used_mb)
        return super().on_loaded(model, now, view)

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        self.used.append(view.used_mb)
        return super().eviction_order(now, view, candidates)


def test_a_request_while_its_model_still_loads_is_a_cold_start() -> None:
    result = simulate(trace((0, "a"), (2, "a"), (6, "a")), MODELS, 100, LRUPolicy())
    assert result.requests == 3
    assert result.cold_starts == 2
    assert result.cold_start_rate == pytest.approx(2 / 3)
    assert result.loads == 1
    # The two cold requests wait 5 s and 3 s for the load that finishes at 5 s.
    assert result.cold_start_delay_p50_s == pytest.approx(4.0)
    assert result.cold_start_delay_p99_s == pytest.approx(4.98)


def test_the_budget_is_never_exceeded_a_load_waits_for_room() -> None:
    policy = WatchedLRU()
    # Room for one model: b must wait until a is READY (5 s), evict it, then load for 5 s.
    result = simulate(trace((0, "a"), (1, "b"), (12, "b"), (13, "a")), MODELS, 15, policy)
    assert max(policy.used) <= 15
    assert result.cold_starts == 3
    assert result.loads == 3
    assert result.evictions == 2
    # Delays 5 s (a), 9 s (b waited for room, then loaded) and 5 s (a again).
    assert result.cold_start_delay_p50_s == pytest.approx(5.0)
    assert result.cold_start_delay_p99_s == pytest.approx(8.92)


def test_idle_memory_counts_only_ready_time_and_memory_counts_loading_too() -> None:
    result = simulate(trace((0, "a"), (20, "a")), MODELS, 100, LRUPolicy())
    assert result.memory_mb_seconds == pytest.approx(10 * 20)
    assert result.idle_memory_mb_seconds == pytest.approx(10 * 15)


def test_memory_figures_cover_first_to_last_arrival_only() -> None:
    # b's load runs past the last arrival: its memory after 1010 s is outside the window.
    result = simulate(trace((1000, "a"), (1008, "b"), (1010, "a")), MODELS, 100, LRUPolicy())
    assert result.memory_mb_seconds == pytest.approx(10 * 10 + 10 * 2)
    assert result.idle_memory_mb_seconds == pytest.approx(10 * 5)
    assert result.cold_starts == 2


def test_a_model_larger_than_the_budget_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="budget can never load: b"):
        simulate(trace((0, "a")), {"a": A, "b": ModelInfo("b", 50.0, 1.0)}, 20, LRUPolicy())


def test_a_trace_naming_an_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks: c"):
        simulate(trace((0, "c")), MODELS, 100, LRUPolicy())


class LateWaker(LRUPolicy):
    """Asks, on its first request, to be woken at a time already past; then ticks once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[float] = []

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        super().on_arrival(model, now, view)
        return Decision(wake_at=now - 10.0) if not self.ticks else Decision()

    def tick(self, now: float, view: CacheView) -> Decision:
        self.ticks.append(now)
        return Decision(wake_at=now if len(self.ticks) == 1 else now + 60.0)


def test_a_wake_up_asked_for_a_time_past_comes_at_once_and_a_tick_asking_again_waits_a_second() -> None:
    policy = LateWaker()
    simulate(Trace.from_arrivals([(100.0, "a"), (400.0, "a")]), {"a": ModelInfo("a", 10.0, 1.0)}, 100.0, policy)
    assert policy.ticks[:3] == [100.0, 101.0, 161.0]


class Watched(Policy):
    """Any policy, with the host and GPU memory in use written down every time it is told something."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.name = inner, inner.name  # type: ignore[misc]
        self.used: list[tuple[float, float]] = []

    def _seen(self, view: CacheView) -> None:
        self.used.append((view.used_of(CPU), view.used_of(GPU)))

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        self._seen(view)
        return self.inner.on_arrival(model, now, view)

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        self._seen(view)
        return self.inner.on_loaded(model, now, view)

    def on_unloaded(self, model: str, now: float, view: CacheView) -> Decision:
        return self.inner.on_unloaded(model, now, view)

    def tick(self, now: float, view: CacheView) -> Decision:
        self._seen(view)
        return self.inner.tick(now, view)

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        return self.inner.eviction_order(now, view, candidates)


GPU_MODELS = {
    "a": ModelInfo("a", 100.0, 1.0),
    "b": ModelInfo("b", 100.0, 1.0),
    **{g: ModelInfo(g, 60.0, 2.0, GPU) for g in ("g0", "g1", "g2")},
}
GPU_TRACE = [(t * 30.0, ("a", "g0", "b", "g1", "g2")[t % 5]) for t in range(100)]


@pytest.mark.parametrize("policy", [LRUPolicy, HybridHistogramPolicy, PredictivePolicy])
def test_gpu_models_are_planned_within_the_gpu_budget_and_make_room_among_themselves(policy: type[Policy]) -> None:
    """Two host models that fit the host budget together, three GPU models of which the GPU budget holds one."""
    watched = Watched(policy())
    result = simulate(Trace.from_arrivals(GPU_TRACE), GPU_MODELS, 200.0, watched, gpu_budget_mb=100.0)
    assert max(cpu for cpu, _ in watched.used) <= 200.0
    assert max(gpu for _, gpu in watched.used) <= 100.0
    assert max(gpu for _, gpu in watched.used) == 60.0
    assert 0 < result.gpu_memory_mb_seconds <= 100.0 * GPU_TRACE[-1][0]
    assert result.memory_mb_seconds <= 200.0 * GPU_TRACE[-1][0]


def test_under_lru_gpu_loads_never_evict_host_models() -> None:
    result = simulate(Trace.from_arrivals(GPU_TRACE), GPU_MODELS, 200.0, LRUPolicy(), gpu_budget_mb=100.0)
    # a and b are cold once each and stay; each GPU request evicts the one GPU model held: 60 of them.
    assert result.cold_starts == 2 + 60


def test_a_gpu_model_larger_than_the_gpu_budget_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("larger than the 50.0 MB GPU budget can never load: g")):
        simulate(Trace.from_arrivals([(0.0, "g")]), {"g": ModelInfo("g", 60.0, 1.0, GPU)}, 100.0, LRUPolicy(), 50.0)

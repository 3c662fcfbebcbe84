"""The lru shadow a live policy is judged against: it must count what the simulator's lru counts, since the
cold starts "avoided" are its count less the server's."""

from __future__ import annotations

import random

from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.policy import CPU, GPU, ModelInfo
from modelserve.prewarm.shadow import LRUShadow
from modelserve.prewarm.simulator import simulate
from modelserve.prewarm.traces import Trace

MODELS = {name: ModelInfo(name, 10.0, 2.0) for name in ("a", "b", "c")}


def shadow_of(budget_mb: float) -> LRUShadow:
    return LRUShadow(lambda device: budget_mb if device == CPU else 0.0, MODELS.__getitem__)


def test_a_request_during_the_load_is_cold_and_one_after_it_is_warm() -> None:
    shadow = shadow_of(20.0)
    assert shadow.arrived("a", 0.0)
    assert shadow.arrived("a", 1.0)  # lru would still be loading it (2 s)
    assert not shadow.arrived("a", 2.5)
    assert shadow.cold_starts["a"] == 2


def test_the_least_recently_used_goes_when_the_budget_is_full() -> None:
    shadow = shadow_of(20.0)
    for name, at in (("a", 0.0), ("b", 10.0), ("a", 20.0), ("c", 30.0)):  # c evicts b, not a
        shadow.arrived(name, at)
    assert shadow.holds("a")
    assert shadow.holds("c")
    assert not shadow.holds("b")
    assert not shadow.arrived("a", 40.0)
    assert shadow.arrived("b", 50.0)


def test_a_model_larger_than_the_budget_is_cold_every_time_and_never_held() -> None:
    shadow = shadow_of(5.0)
    assert shadow.arrived("a", 0.0)
    assert shadow.arrived("a", 100.0)
    assert not shadow.holds("a")


def test_it_counts_what_the_simulators_lru_counts_on_the_same_requests() -> None:
    rng = random.Random(1)
    at, arrivals = 0.0, []
    for _ in range(300):  # gaps of 0.5-4 s against 2 s loads: some requests arrive while lru loads
        at += rng.uniform(0.5, 4.0)
        arrivals.append((at, rng.choice("abc")))
    shadow = shadow_of(20.0)
    for at, name in arrivals:
        shadow.arrived(name, at)
    simulated = simulate(Trace.from_arrivals(arrivals), MODELS, 20.0, LRUPolicy())
    assert simulated.cold_starts > 50
    assert sum(shadow.cold_starts.values()) == simulated.cold_starts


def test_a_model_loaded_at_start_is_held_by_lru_too_while_it_fits() -> None:
    shadow = shadow_of(20.0)
    for name in ("a", "b", "c"):  # the third does not fit without evicting: lru would not have loaded it
        shadow.loaded(name, 0.0)
    assert not shadow.arrived("a", 1.0)
    assert not shadow.arrived("b", 1.0)
    assert shadow.arrived("c", 1.0)


def test_a_model_on_the_gpu_makes_room_only_among_gpu_models() -> None:
    models = {**MODELS, "g": ModelInfo("g", 10.0, 2.0, GPU), "h": ModelInfo("h", 10.0, 2.0, GPU)}
    shadow = LRUShadow(lambda device: 20.0 if device == CPU else 10.0, models.__getitem__)
    for name, at in (("a", 0.0), ("b", 1.0), ("g", 2.0), ("h", 3.0)):  # h evicts g, not the older a
        shadow.arrived(name, at)
    assert [shadow.holds(m) for m in ("a", "b", "g", "h")] == [True, True, False, True]

"""predictive explains itself: every load and eviction of a replay carries a reason with the numbers behind
it, and ``planned`` and ``forecast`` read the schedules, leaders and time of day it plans from."""

from __future__ import annotations

import re

import numpy as np
import pytest

from modelserve.prewarm.generators import generate
from modelserve.prewarm.policy import CacheView, Decision, Forecast, ModelInfo, Pattern
from modelserve.prewarm.predictive import SAFETY, SLOT_LEAD, PredictivePolicy
from modelserve.prewarm.simulator import Simulator
from modelserve.prewarm.traces import Trace


class RecordingPolicy(PredictivePolicy):
    """The real policy, writing down each decision it hands the simulator that loads or evicts something."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: list[Decision] = []

    def _seen(self, decision: Decision) -> Decision:
        if decision.load or decision.evict:
            self.decisions.append(decision)
        return decision

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        return self._seen(super().on_arrival(model, now, view))

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        return self._seen(super().on_loaded(model, now, view))

    def tick(self, now: float, view: CacheView) -> Decision:
        return self._seen(super().tick(now, view))


def replay(
    arrivals: list[tuple[float, str]], models: dict[str, ModelInfo], budget: float
) -> tuple[PredictivePolicy, Simulator]:
    policy = PredictivePolicy()
    simulator = Simulator(models, budget, policy)
    simulator.run(Trace.from_arrivals(arrivals))
    return policy, simulator


def test_every_load_and_eviction_of_a_replay_says_why() -> None:
    # A fifth each of schedules, bursts, the time of day, pipelines and daily jobs, under a quarter of their size.
    trace, catalogue = generate("mixed", seed=5, models=30, days=2)
    policy = RecordingPolicy()
    Simulator(catalogue, 0.25 * sum(m.size_mb for m in catalogue.values()), policy).run(trace)
    acts = [(model, decision.why.get(model)) for decision in policy.decisions for model in decision.load]
    acts += [(model, decision.why.get(model)) for decision in policy.decisions for model in decision.evict]
    assert len(acts) > 1000
    unexplained = [model for model, why in acts if not why]
    assert not unexplained
    said = {why for _, why in acts if why}
    patterns = [
        r"schedule: next request due in \d+ s \(period \d+ s ± \d+ s\)$",
        r"schedule: next request due in \d+ s \(period \d+ s ± \d+ s\); unloaded until its pre-load in \d+ s$",
        r"follows m\d+'s burst \(lag \d+-\d+ s\)$",
        r"resident set: \d+(st|nd|rd|th) of \d+ by bursts per MB at this time of day$",
        r"time of day: \d+\.\d requests expected in the quarter hour from \d\d:\d\d UTC$",
        r"displaced by the pre-load of m\d+ \(worth .+ against its .+\)$",
        r"displaced by m\d+, which joined the resident set$",
        r"keep-alive of \d+ s ran out$",
    ]
    for pattern in patterns:
        assert any(re.match(pattern, why) for why in said), pattern


def test_a_scheduled_models_forecast_and_planned_preload_follow_its_period() -> None:
    # Every 300 s, loading takes 100 s: after each request it is unloaded and loaded again 101 s before the next.
    times = [300.0 * i for i in range(12)]
    policy, simulator = replay([(t, "p") for t in times], {"p": ModelInfo("p", 100.0, 100.0)}, 1000.0)
    last = times[-1]
    forecast = policy.forecast("p", last)
    assert forecast.pattern is Pattern.SCHEDULE
    assert forecast.next_arrival == last + 300.0
    steps = policy.planned(last, simulator.cache)
    assert [(s.action, s.model, s.at) for s in steps] == [
        ("load", "p", last + 300.0 - 100.0 - SAFETY),
        ("evict", "p", last + 300.0 + SAFETY),
    ]
    assert steps[0].reason == "schedule: next request due in 300 s (period 300 s ± 0 s)"
    # Asked later, past the window of the request due: the next tick, a period on.
    assert policy.forecast("p", last + 400.0).next_arrival == last + 600.0


def test_a_follower_is_forecast_from_its_leaders_burst() -> None:
    # b follows a by 30 s; a comes at random, more than 4 hours apart. c, much later, lets the replay run on
    # until b has been unloaded after its last request.
    rng = np.random.default_rng(7)
    starts = np.cumsum(rng.uniform(15000.0, 30000.0, 12))
    now = float(starts[-1]) + 20000.0
    arrivals = [(float(t), "a") for t in starts] + [(float(t) + 30.0, "b") for t in starts] + [(now, "c")]
    models = {name: ModelInfo(name, 100.0, load) for name, load in (("a", 1.0), ("b", 10.0), ("c", 1.0))}
    policy, simulator = replay(arrivals, models, 1000.0)
    assert not simulator.cache.is_ready("b")
    assert policy.forecast("b", now).pattern is Pattern.FOLLOWER
    assert policy.forecast("b", now).next_arrival is None  # until a's next burst says when
    policy.on_arrival("a", now, simulator.cache)
    assert policy.forecast("b", now).pattern is Pattern.FOLLOWER
    assert policy.forecast("b", now).next_arrival == pytest.approx(now + 30.0)
    load = [s for s in policy.planned(now, simulator.cache) if s.model == "b" and s.action == "load"]
    assert [s.at for s in load] == [pytest.approx(now + 30.0 - 10.0 - SAFETY)]
    assert load[0].reason == "follows a's burst (lag 30-30 s)"


def test_bursts_at_random_say_nothing_of_when_and_the_time_of_day_says_which_quarter_hour() -> None:
    rng = np.random.default_rng(3)
    day = 86400.0
    bursts = [
        (float(start + t), "burst")
        for start in np.cumsum(rng.exponential(3000.0, 60))
        for t in np.cumsum(rng.exponential(5.0, 10))
    ]
    # Four requests at random in each of three hours, eight hours apart, each day: no daily window (the day has
    # no quiet stretch of 8 hours), but the time of day knows the hours.
    hours = [
        (float(d * day + h * 3600.0 + t), "thrice")
        for d in range(3)
        for h in (2, 10, 18)
        for t in rng.uniform(0, 3600, 4)
    ]
    models = {"burst": ModelInfo("burst", 100.0, 2.0), "thrice": ModelInfo("thrice", 100.0, 2.0)}
    # Told of the requests and ticked every 5 minutes, its decisions left undone: nothing is loaded when it plans.
    policy = PredictivePolicy()
    empty = Simulator(models, 1000.0, policy).cache
    now = 2 * day + 19.5 * 3600.0
    ticks = [(float(at), "") for at in np.arange(0.0, now, 300.0)]
    for at, model in sorted(bursts + hours + ticks):
        if model:
            policy.on_arrival(model, at, empty)
        else:
            policy.tick(at, empty)
    assert policy.forecast("burst", now) == Forecast("burst", Pattern.BURST, None)
    thrice = policy.forecast("thrice", now)
    assert thrice.pattern is Pattern.DAILY_WINDOW
    assert thrice.next_arrival is not None
    assert 3 * day + 2 * 3600.0 <= thrice.next_arrival < 3 * day + 3 * 3600.0
    assert policy.forecast("never-asked", now) == Forecast("never-asked", Pattern.NONE, None)
    # At night, it plans the pre-load for the first quarter hour it expects the model in, SLOT_LEAD ahead.
    for at in np.arange(now, thrice.next_arrival - 300.0, 600.0):
        policy.tick(float(at), empty)
    steps = [s for s in policy.planned(thrice.next_arrival - 300.0, empty) if s.model == "thrice"]
    assert [(s.action, s.at) for s in steps] == [("load", thrice.next_arrival - SLOT_LEAD)]
    assert re.match(r"time of day: \d\.\d requests expected in the quarter hour from 02:\d\d UTC$", steps[0].reason)

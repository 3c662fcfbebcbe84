"""predictive: a model on a schedule is loaded before its request by at least its load time, a model
that follows another is loaded when its leader is requested (and unloaded after its own request), and a
bursty model is kept through the usual gap between its bursts; models whose requests come at random stay
resident by their rate per MB, leaving room for bursts."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.prewarm.histogram import HybridHistogramPolicy
from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.patterns import DAY, ArrivalHistory, Schedule, daily
from modelserve.prewarm.policy import GPU, ModelInfo, Pattern, Policy
from modelserve.prewarm.predictive import PredictivePolicy
from modelserve.prewarm.residency import bursting_mb, choose, keep_alive_mb
from modelserve.prewarm.simulator import simulate
from modelserve.prewarm.traces import Trace


def test_a_scheduled_model_is_ready_before_each_request_and_unloaded_in_between() -> None:
    # Every 300 s, and loading takes 100 s: pre-warming on the idle-time head alone (270 s) is too late.
    models = {"p": ModelInfo("p", 100.0, 100.0)}
    arrivals = Trace.from_arrivals([(300.0 * i, "p") for i in range(30)])
    predictive = PredictivePolicy()
    ours = simulate(arrivals, models, 1000, predictive)
    hybrid = simulate(arrivals, models, 1000, HybridHistogramPolicy())
    kept = simulate(arrivals, models, 1000, LRUPolicy())
    assert ours.cold_starts == 1
    assert hybrid.cold_starts > 15  # from its 11th request on, the load it starts at 270 s ends at 370 s
    assert ours.idle_memory_mb_seconds < 0.2 * kept.idle_memory_mb_seconds
    assert predictive.expected("p") == 300.0 * 30


def test_a_scheduled_model_is_ready_again_after_a_skipped_tick() -> None:
    # Every 300 s, loading takes 100 s, and ticks 12, 20 and 21 never come: a job that did not run.
    skipped = {12, 20, 21}
    models = {"p": ModelInfo("p", 100.0, 100.0)}
    arrivals = Trace.from_arrivals([(300.0 * i, "p") for i in range(30) if i not in skipped])
    ours = simulate(arrivals, models, 1000, PredictivePolicy())
    assert ours.cold_starts == 1  # the first request only: each tick after a silence was loaded in time
    # ... and in between it was unloaded: about 200 s of each 300 s, skipped ticks included.
    assert ours.idle_memory_mb_seconds < 0.5 * 100.0 * 300.0 * 29


def test_a_follower_is_loaded_when_its_leader_is_requested() -> None:
    # b follows a by 30 s; a comes at random, more than 4 hours apart, so no keep-alive spans the gap.
    rng = np.random.default_rng(7)
    starts = np.cumsum(rng.uniform(15000.0, 30000.0, 20))
    arrivals = Trace.from_arrivals([(float(t), "a") for t in starts] + [(float(t) + 30.0, "b") for t in starts])
    models = {"a": ModelInfo("a", 100.0, 1.0), "b": ModelInfo("b", 100.0, 10.0)}
    ours = simulate(arrivals, models, 1000, PredictivePolicy())
    hybrid = simulate(arrivals, models, 1000, HybridHistogramPolicy())
    # Every request for a is cold under both. b is cold until a has led it MIN_SUPPORT (3) times, then warm.
    assert ours.cold_starts <= 20 + 4
    assert hybrid.cold_starts >= 20 + 15


def test_a_bursty_model_is_kept_through_the_usual_gap_between_its_bursts() -> None:
    # Bursts of 10 requests about 5 s apart, 10 to 20 minutes between bursts, and memory for this model only
    # (so no keep-alive stretches): within-burst gaps are 90 % of its inter-arrival times, and the 90th
    # percentile of those alone would unload it seconds after each burst, leaving every burst cold.
    rng = np.random.default_rng(11)
    starts = np.cumsum(rng.uniform(600.0, 1200.0, 40))
    arrivals = Trace.from_arrivals([(float(t), "b") for s in starts for t in s + np.cumsum(rng.exponential(5.0, 10))])
    models = {"b": ModelInfo("b", 100.0, 1.0)}
    ours = simulate(arrivals, models, 100, PredictivePolicy())
    kept = simulate(arrivals, models, 100, LRUPolicy())
    assert kept.cold_starts <= 2
    # The first bursts are cold until three gaps are seen; after that only those beyond the 75th percentile.
    assert ours.cold_starts <= 20
    assert ours.idle_memory_mb_seconds < kept.idle_memory_mb_seconds


@pytest.mark.parametrize("spacing", [0.01, 0.5, 2.5])
def test_a_first_burst_keeps_its_model_for_the_default_keep_alive(spacing: float) -> None:
    # An operator's first requests, closer than MIN_PERIOD: one burst says nothing of when the next comes,
    # so the model stays DEFAULT_KEEP_ALIVE (600 s) after the last; a second burst 500 s later is warm.
    first = [(i * spacing, "m") for i in range(6)]
    arrivals = Trace.from_arrivals([*first, (first[-1][0] + 500.0, "m")])
    models = {"m": ModelInfo("m", 100.0, 2.0)}
    predictive = PredictivePolicy()
    ours = simulate(arrivals, models, 1000, predictive)
    assert ours.cold_starts == sum(t < 2.0 for t, _ in first)  # those that came while it loaded; not the last
    assert predictive.forecast("m", first[-1][0]).pattern is not Pattern.SCHEDULE


def test_host_and_gpu_memory_are_planned_apart() -> None:
    # Two host models that fill the host budget, and on a GPU a small busy model and a large rare one that
    # the GPU budget cannot hold together. Each memory gets its own resident set and makes room among its
    # own models: the GPU models change nothing for the host ones, and the busy one stays on the GPU.
    rng = np.random.default_rng(3)
    day = 86400.0

    def arrivals(model: str, gap: float) -> list[tuple[float, str]]:
        return [(float(t), model) for t in np.cumsum(rng.exponential(gap, int(day / gap * 2))) if t < day]

    host = arrivals("a", 900.0) + arrivals("b", 900.0)
    gpu = arrivals("busy", 300.0) + arrivals("rare", 3 * 3600.0)
    models = {
        "a": ModelInfo("a", 100.0, 5.0),
        "b": ModelInfo("b", 100.0, 5.0),
        "busy": ModelInfo("busy", 40.0, 5.0, GPU),
        "rare": ModelInfo("rare", 90.0, 5.0, GPU),
    }

    def cold(trace: list[tuple[float, str]], policy: Policy | None = None) -> int:
        replay = Trace.from_arrivals(trace)
        return simulate(replay, models, 200.0, policy or PredictivePolicy(), gpu_budget_mb=100.0).cold_starts

    assert cold(host + gpu) == cold(host) + cold(gpu)
    # The rare one's loads evict the busy one, which lru leaves out until its next request (cold); the GPU's
    # resident set brings it back once the rare one's burst is over.
    assert cold(gpu) < cold(gpu, LRUPolicy()) - 3


def test_a_follower_its_leader_announces_is_unloaded_after_its_request() -> None:
    # b (large) follows a by 30 s every time; a comes every 10 to 20 minutes, well within b's own
    # keep-alive, so without its leader b would stay loaded throughout.
    rng = np.random.default_rng(5)
    starts = np.cumsum(rng.uniform(600.0, 1200.0, 40))
    arrivals = Trace.from_arrivals([(float(t), "a") for t in starts] + [(float(t) + 30.0, "b") for t in starts])
    models = {"a": ModelInfo("a", 10.0, 1.0), "b": ModelInfo("b", 1000.0, 10.0)}
    ours = simulate(arrivals, models, 1010, PredictivePolicy())
    kept = simulate(arrivals, models, 1010, LRUPolicy())
    # a until it has four inter-arrival times (its default keep-alive is shorter than its gaps), and b until
    # a has led it MIN_SUPPORT (3) times.
    assert ours.cold_starts <= 5 + 4
    assert ours.idle_memory_mb_seconds < 0.2 * kept.idle_memory_mb_seconds


def test_models_with_the_most_requests_per_mb_stay_resident_through_others_loads() -> None:
    # Three small models asked for every 5 minutes on average and three every 50, at random (Poisson):
    # recency says nothing about the next request, so LRU lets each rare load evict a frequent model.
    rng = np.random.default_rng(3)
    arrivals = Trace.from_arrivals(
        [
            (float(t), name)
            for name, gap in zip("abcxyz", [300.0] * 3 + [3000.0] * 3, strict=True)
            for t in np.cumsum(rng.exponential(gap, int(4 * 86400 / gap)))
        ]
    )
    models = {name: ModelInfo(name, 100.0, 5.0) for name in "abcxyz"}
    predictive = PredictivePolicy()
    ours = simulate(arrivals, models, 400, predictive)
    lru = simulate(arrivals, models, 400, LRUPolicy())
    rare = sum(1 for m in arrivals.models if m in "xyz")
    assert set(predictive.resident()) == {"a", "b", "c"}
    # Once the rates are known, only the rare models' requests are cold, and not all of them.
    assert ours.cold_starts <= 0.8 * rare + 10
    assert ours.cold_starts < 0.85 * lru.cold_starts


def test_the_resident_set_leaves_room_for_bursts() -> None:
    # A model that bursts for about a minute every ten holds its size a tenth of the time on average.
    rng = np.random.default_rng(5)
    history = ArrivalHistory(0.0)
    for start in np.arange(0.0, 2 * 86400.0, 600.0):
        for t in start + np.cumsum(rng.exponential(3.0, 20)):
            history.add(float(t))
    info = ModelInfo("b", 1000.0, 4.0)
    held = bursting_mb([("b", history)], lambda _: info, 2 * 86400.0, clumped=4.0, windowed={})
    assert 60.0 < held < 200.0
    assert bursting_mb([("b", history)], lambda _: info, 2 * 86400.0, clumped=50.0, windowed={}) == 0.0


def test_the_resident_set_fills_its_capacity_densest_first() -> None:
    histories = {}
    for name, gap in (("often", 60.0), ("sometimes", 600.0), ("rarely", 20000.0)):
        history = histories[name] = ArrivalHistory(0.0)
        for t in np.arange(gap, 86400.0, gap):
            history.add(float(t))
    sizes = {"often": 300.0, "sometimes": 100.0, "rarely": 10.0}

    def info(model: str) -> ModelInfo:
        return ModelInfo(model, sizes[model], 1.0)

    # 1/60 per s per 300 MB beats 1/600 per 100 MB, which does not fit beside it; the small rare one does.
    assert list(choose(histories.items(), info, 129600.0, capacity_mb=350.0)) == ["often", "rarely"]
    assert list(choose(histories.items(), info, 129600.0, capacity_mb=400.0)) == ["often", "sometimes"]


def test_sparse_models_keep_alive_memory_goes_to_the_smallest_of_them_first() -> None:
    # Six models asked for at random about every 8 hours: three of 50 MB and three of 500 MB. A keep-alive
    # after each request holds all six alike; holding the small ones for good keeps more warm per MB.
    rng = np.random.default_rng(9)
    names = ["s1", "s2", "s3", "l1", "l2", "l3"]
    arrivals = Trace.from_arrivals(
        [(float(t), name) for name in names for t in np.cumsum(rng.exponential(8 * 3600.0, 40)) if t < 10 * 86400.0]
    )
    models = {name: ModelInfo(name, 50.0 if name[0] == "s" else 500.0, 5.0) for name in names}
    predictive = PredictivePolicy()
    ours = simulate(arrivals, models, 1000, predictive)
    hybrid = simulate(arrivals, models, 1000, HybridHistogramPolicy())
    resident = predictive.resident()
    assert set(resident[:3]) == {"s1", "s2", "s3"}  # densest first: all the small ones, then what fits
    assert len(resident) < 6
    assert ours.cold_starts < 0.7 * hybrid.cold_starts
    # ... and each GB·h held keeps more requests warm than hybrid-histogram's keep-alives do.
    warm_per_mb_s = [(r.requests - r.cold_starts) / r.idle_memory_mb_seconds for r in (ours, hybrid)]
    assert warm_per_mb_s[0] > 1.3 * warm_per_mb_s[1]


def test_keep_alive_mb_is_the_share_of_time_a_keep_alive_holds_a_memoryless_model() -> None:
    rng = np.random.default_rng(4)
    gaps = rng.exponential(8 * 3600.0, 20000)
    held = np.minimum(gaps, 4 * 3600.0).sum() / gaps.sum()
    history = ArrivalHistory(0.0)
    formula = keep_alive_mb([("m", history, 1 / (8 * 3600.0))], lambda m: ModelInfo(m, 100.0, 1.0), 4 * 3600.0)
    assert formula == pytest.approx(100.0 * held, rel=0.02)


def test_a_model_whose_keep_alive_ends_while_it_loads_is_unloaded_once_ready() -> None:
    # One large model asked for at random about twice a day, with no room to keep it: after each request
    # it should be unloaded as soon as its load ends, not held until something needs the memory.
    rng = np.random.default_rng(2)
    times = np.cumsum(rng.exponential(43200.0, 20))
    arrivals = Trace.from_arrivals([(float(t), "r") for t in times])
    models = {"r": ModelInfo("r", 1000.0, 30.0)}
    ours = simulate(arrivals, models, 1000, PredictivePolicy())
    span = float(times[-1] - times[0])
    assert ours.idle_memory_mb_seconds < 0.1 * 1000.0 * span


def test_a_daily_models_hour_is_read_across_the_neighbouring_quarter_hours() -> None:
    # 10:01 on day one. On day two the quarter hours from 09:45 to 10:30 expect it, not only 10:00's.
    history = ArrivalHistory(36060.0)
    day = 86400.0
    assert history.expected_in(day + 36900.0, 900.0) == 0.0  # 10:15: its own slot's count says nothing
    for start in (35100.0, 36000.0, 36900.0):
        assert history.daily_near(day + start, per_day=2.0)
    assert not history.daily_near(day + 37800.0, per_day=2.0)
    assert not history.daily_near(36900.0, per_day=2.0)  # no day seen yet
    busy = ArrivalHistory(36060.0)
    for minute in range(1, 5):  # five requests that hour: too busy for a window wider than its slot
        busy.add(36060.0 + minute * 60.0)
    assert not busy.daily_near(day + 36000.0, per_day=2.0)
    assert busy.daily_near(day + 36000.0, per_day=5.0)


@pytest.mark.parametrize(
    ("gap", "found"),
    [(DAY + 600.0, True), (DAY - 2000.0, True), (2 * DAY - 1000.0, True), (1.5 * DAY, False), (3 * DAY, False)],
)
def test_one_gap_of_about_a_day_or_two_reads_as_a_daily_job(gap: float, found: bool) -> None:
    assert daily(gap) == (Schedule(DAY, 2700.0) if found else None)


def test_a_daily_job_is_loaded_before_its_third_request() -> None:
    # 10:00 give or take ten minutes: the gap from the first request to the second is enough to expect the
    # third a day on, 45 minutes either side.
    times = [d * DAY + 36000.0 + offset for d, offset in enumerate([0.0, 500.0, -400.0])]
    arrivals = Trace.from_arrivals([(t, "d") for t in times])
    predictive = PredictivePolicy()
    ours = simulate(arrivals, {"d": ModelInfo("d", 100.0, 5.0)}, 1000.0, predictive)
    assert ours.cold_starts == 1
    assert predictive.expected("d") == pytest.approx(times[-1] + DAY - 2700.0)

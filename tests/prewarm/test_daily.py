"""Office hours: a model whose bursts keep to the same hours on working days is read as keeping a daily
window, loaded before it opens on the days it is expected to, and unloaded once it has closed."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.prewarm.daily import MAX_SILENT, QUIET_SEEN, WINDOW_LAG, WINDOW_LEAD, DailyWindow
from modelserve.prewarm.policy import CacheView, Decision, ModelInfo, Pattern
from modelserve.prewarm.predictive import PredictivePolicy
from modelserve.prewarm.simulator import Simulator
from modelserve.prewarm.traces import Trace

DAY = 86400.0
HOUR = 3600.0


def office_starts(rng: np.random.Generator, days: list[int], opens: float = 9.0, closes: float = 17.0) -> list[float]:
    """Bursts starting at random, two an hour, between ``opens`` and ``closes`` o'clock on ``days``."""
    out: list[float] = []
    for day in days:
        at = day * DAY + opens * HOUR + rng.exponential(HOUR / 2)
        while at < day * DAY + closes * HOUR:
            out.append(float(at))
            at += rng.exponential(HOUR / 2)
    return out


def window_of(starts: list[float]) -> DailyWindow:
    daily = DailyWindow()
    for at in starts:
        daily.add(at)
    return daily


def test_a_window_is_read_from_bursts_in_the_same_hours_and_not_from_bursts_at_any_hour() -> None:
    rng = np.random.default_rng(1)
    daily = window_of(office_starts(rng, [0, 1]))
    window = daily.window
    assert window is not None
    assert 9 * HOUR <= window.opens < 10 * HOUR
    assert 6 * HOUR < window.length <= 8.5 * HOUR  # 9 to 17 o'clock, read a little wide (below)
    assert daily.ready(2 * DAY, watched=0.0)
    random_hours = window_of(sorted(float(t) for t in rng.uniform(0.0, 2 * DAY, 30)))
    assert random_hours.window is None


def test_a_window_read_from_few_bursts_reaches_past_them_as_far_as_they_are_apart() -> None:
    # Five starts, 10:00 to 14:00 over two days: the true hours reach past both ends by about a gap between
    # starts (the range of n random points falls short of their interval by 2/(n+1) of it).
    daily = window_of([DAY * d + HOUR * h for d, h in ((0, 10.0), (0, 12.0), (1, 11.0), (1, 13.0), (1, 14.0))])
    assert daily.window is not None
    assert daily.window.opens == pytest.approx(9.0 * HOUR)
    assert daily.window.length == pytest.approx(6.0 * HOUR)
    assert daily.current(2 * DAY + 14.5 * HOUR) is not None  # after the latest start seen, within the window


def test_one_days_window_is_read_once_the_quiet_either_side_was_watched() -> None:
    # Watched from midnight, bursts from 09:00 to 12:00 on the first day: at 12:30 the afternoon is still to come.
    starts = office_starts(np.random.default_rng(2), [0], closes=12.0)
    daily = window_of(starts)
    assert daily.window is not None
    assert not daily.ready(starts[-1] + 0.5 * HOUR, watched=0.0)
    assert daily.ready(starts[-1] + QUIET_SEEN, watched=0.0)
    assert not daily.ready(starts[-1] + QUIET_SEEN, watched=starts[0] - 0.5 * HOUR)  # its morning was not seen


def test_a_weekend_is_expected_only_until_its_first_day_stays_quiet_and_a_week_on_by_the_day() -> None:
    starts = office_starts(np.random.default_rng(3), [0, 1, 2, 3, 4])
    daily = window_of(starts)
    window = daily.window
    assert window is not None
    saturday, sunday, monday = (day * DAY + window.opens for day in (5, 6, 7))
    # Saturday follows a working day: expected, until it has been quiet a while after opening.
    assert daily.expects(saturday, saturday - 600.0, watched=0.0)
    assert not daily.expects(saturday, saturday + MAX_SILENT + 1.0, watched=0.0)
    assert daily.rate(saturday + MAX_SILENT + 1.0, watched=0.0) == 0.0
    # Sunday follows a quiet day; Monday a week on follows the Monday seen, not the quiet Sunday.
    assert not daily.expects(sunday, sunday - 600.0, watched=0.0)
    assert daily.expects(monday, monday - 600.0, watched=0.0)
    assert daily.upcoming(sunday - 600.0, watched=0.0) == monday
    # A second Saturday follows the first: quiet.
    assert not daily.expects(saturday + 7 * DAY, saturday + 7 * DAY - 600.0, watched=0.0)


def test_the_window_is_rated_by_the_days_before_today() -> None:
    # Eight bursts on the first day and sixteen on the second, from 09:00 to 17:00; one so far on the third.
    starts = [9 * HOUR + k * HOUR for k in range(8)]
    starts += [DAY + 9 * HOUR + k * HOUR / 2 for k in range(16)] + [2 * DAY + 9 * HOUR + 60.0]
    daily = window_of(starts)
    window = daily.window
    assert window is not None
    assert window.length == pytest.approx(8 * HOUR - 60.0 + 0.0, abs=1800.0)
    rate = daily.rate(2 * DAY + 10 * HOUR, watched=0.0)
    assert rate == pytest.approx(24 / (window.length * 2))
    opens = 2 * DAY + window.opens
    assert daily.rate(opens - WINDOW_LEAD - 60.0, watched=0.0) == 0.0  # before it opens
    assert daily.rate(opens + window.length + WINDOW_LAG + 60.0, watched=0.0) == 0.0  # after it closes


class RecordingPolicy(PredictivePolicy):
    """The real policy, writing down when it loads and evicts each model and why, and its cold requests."""

    def __init__(self) -> None:
        super().__init__()
        self.acts: list[tuple[float, str, str, str]] = []  # (at, load or evict, model, reason)
        self.cold: list[tuple[float, str]] = []

    def _seen(self, decision: Decision, now: float) -> Decision:
        self.acts += [(now, "load", m, decision.reason(m)) for m in decision.load]
        self.acts += [(now, "evict", m, decision.reason(m)) for m in decision.evict]
        return decision

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        if not view.is_ready(model):
            self.cold.append((now, model))
        return self._seen(super().on_arrival(model, now, view), now)

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        return self._seen(super().on_loaded(model, now, view), now)

    def tick(self, now: float, view: CacheView) -> Decision:
        return self._seen(super().tick(now, view), now)


def test_an_office_model_is_loaded_before_its_window_opens_and_unloaded_after_it_closes() -> None:
    # Three models working 09:00-17:00 on weekdays (bursts of four requests), with room for all of them, and
    # one more asked for at noon on Sunday so that the replay runs through the weekend.
    rng = np.random.default_rng(4)
    arrivals = [
        (float(start + t), name)
        for name in ("a", "b", "c")
        for start in office_starts(rng, [0, 1, 2, 3, 4])
        for t in np.cumsum(rng.exponential(5.0, 4))
    ]
    arrivals.append((6 * DAY + 12 * HOUR, "z"))
    models = {name: ModelInfo(name, 100.0, 5.0) for name in "abcz"}
    policy = RecordingPolicy()
    Simulator(models, 1000.0, policy).run(Trace.from_arrivals(arrivals))
    assert policy.forecast("a", 3 * DAY).pattern is Pattern.DAILY_WINDOW

    def acts(name: str, act: str, since: float, until: float) -> list[tuple[float, str]]:
        return [(at, why) for at, a, m, why in policy.acts if m == name and a == act and since < at < until]

    for day in (2, 3, 4):
        for name in "abc":
            # Loaded for the day's window ahead of its opening, between the night and noon (unless its first burst
            # came earlier than any seen before, and loaded it) ...
            loads = acts(name, "load", day * DAY, day * DAY + 12 * HOUR)
            first = min(t for t, m in arrivals if m == name and t > day * DAY)
            early = (first, name) in policy.cold
            assert early or any(why.startswith("daily window ") and " opens in " in why for _, why in loads)
            # ... and unloaded once it is over: after the day's last request, before midnight.
            last = max(t for t, m in arrivals if m == name and t < (day + 1) * DAY)
            assert acts(name, "evict", last, (day + 1) * DAY), (day, name)
    # A day's first burst finds its model loaded, unless it comes earlier than any seen before; every request
    # after it does too, whatever the day.
    firsts = [min(t for t, m in arrivals if m == n and d * DAY < t < (d + 1) * DAY) for n in "abc" for d in (2, 3, 4)]
    cold = [t for t, m in policy.cold if 2 * DAY < t < 5 * DAY]
    assert len(set(cold) & set(firsts)) <= 3
    assert len(cold) <= 3 * 3  # each cold first burst's next requests arrive while it loads
    # Saturday follows a working day: loaded, then unloaded when it stays quiet; nothing is loaded on Sunday.
    for name in "abc":
        saturday = acts(name, "load", 5 * DAY, 6 * DAY)
        assert saturday
        assert acts(name, "evict", saturday[0][0], saturday[0][0] + WINDOW_LEAD + MAX_SILENT + 600.0)
        assert not acts(name, "load", 6 * DAY, 7 * DAY)
    opens = policy.forecast("a", 6 * DAY + 12 * HOUR).next_arrival
    assert opens is not None
    assert opens >= 7 * DAY  # next Monday's window, Sunday's being quiet

"""What one model's past arrivals say about its next: fixed-rate schedules, bursts on a schedule, the time
of day and week, its daily window, and the chance of a request soon. Pure bookkeeping on times passed in; no
policy here."""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections import deque
from dataclasses import dataclass

from modelserve.prewarm.daily import DAY, DailyWindow

HISTORY = 32  # inter-arrival times kept per model
ACTIVATION_HISTORY = 12
ACTIVATION_GAP = 60.0  # an arrival after this much silence starts a burst ("activation")
REGULAR_SHARE = 0.75  # share of recent intervals that must sit near the median to call a schedule regular
MIN_PERIOD = 3.0  # seconds: under this a schedule could not free its model between two requests (load aside)
REGULAR_TOLERANCE = 0.10  # ... near: within this fraction of the median (and at least a second)
SLOT_SECONDS = 900.0
DAY_SLOTS = 96
WEEK_SLOTS = 7 * DAY_SLOTS
WEEK = 7 * DAY
TIME_OF_DAY_REACH = 2  # slots either side that count towards the time of day's rate of bursts
SPAN_FLOOR = 3600.0  # a model seen for less than this is rated as if seen for this long
CLUMPED = 4.0  # requests per burst from which a model's requests count as bursts, not single arrivals


@dataclass(frozen=True, slots=True)
class Schedule:
    """A detected fixed rate: the next request is due ``period`` after the last, give or take ``jitter``."""

    period: float
    jitter: float


def regular(intervals: deque[float], minimum: int) -> Schedule | None:
    """The schedule ``intervals`` follow, if most recent ones sit near their median and it is at least
    ``MIN_PERIOD``: requests closer than that leave no time to unload between them, so no schedule helps (a
    client's requests a few milliseconds apart once read as a schedule whose next tick never came, and the
    model was unloaded a second after them).

    The jitter is three standard deviations of the near ones (and at least the largest seen), so a pre-load
    planned from it is early for all but a fraction of a percent of requests."""
    if len(intervals) < minimum:
        return None
    ordered = sorted(intervals)
    median = ordered[len(ordered) // 2]
    tolerance = max(REGULAR_TOLERANCE * median, 1.0)
    near = [i - median for i in ordered if abs(i - median) <= tolerance]
    if median < MIN_PERIOD or len(near) < REGULAR_SHARE * len(ordered):
        return None
    spread = math.sqrt(sum(d * d for d in near) / len(near))
    return Schedule(median, max(3.0 * spread, max(abs(d) for d in near)))


DAILY_TOLERANCE = 2700.0  # a gap this close to one or two days reads as a daily job, due again this close


def daily(gap: float) -> Schedule | None:
    """A daily schedule, when ``gap`` is a day or two (one skipped) give or take ``DAILY_TOLERANCE``.

    A job run once a day needs a week for :func:`regular`'s four intervals; waiting for them leaves its
    first five requests cold. One gap this close to a whole day is already telling: for a model asked for at
    random about once a day, a gap within 45 minutes of 24 hours comes about one time in thirty, and then
    costs one load held for the tolerance either side of the hour."""
    days = round(gap / DAY)
    if 1 <= days <= 2 and abs(gap - days * DAY) <= DAILY_TOLERANCE:
        return Schedule(DAY, DAILY_TOLERANCE)
    return None


class ArrivalHistory:
    """One model's recent inter-arrival times, its bursts, and its arrivals per slot of the day and week."""

    def __init__(self, first: float) -> None:
        self.first = first
        self.last = first
        self.count = 1
        self.intervals: deque[float] = deque(maxlen=HISTORY)
        self._sorted: list[float] = []
        self.last_activation = first
        self.activation_count = 1
        self.activations: deque[float] = deque(maxlen=ACTIVATION_HISTORY)
        self.burst_intervals: deque[float] = deque(maxlen=HISTORY)  # gaps shorter than ACTIVATION_GAP
        self.by_week_slot = [0] * WEEK_SLOTS
        self.by_day_slot = [0] * DAY_SLOTS
        self.busy_week_slot = [0] * WEEK_SLOTS  # how many past weeks had a request in the slot
        self.busy_day_slot = [0] * DAY_SLOTS
        self.activations_by_day_slot = [0] * DAY_SLOTS
        self.activations_by_day_slot[_week_slot(first) % DAY_SLOTS] = 1
        self._last_slot = -1
        self._count_slot(first)
        self._schedule: Schedule | None = None
        self._burst_schedule: Schedule | None = None
        self.daily = DailyWindow()
        self.daily.add(first)

    def add(self, now: float) -> bool:
        """Record an arrival at ``now``; True when it starts a burst (an activation)."""
        gap = now - self.last
        self.last = now
        self.count += 1
        if len(self.intervals) == HISTORY:
            del self._sorted[bisect_right(self._sorted, self.intervals[0]) - 1]
        self.intervals.append(gap)
        insort(self._sorted, gap)
        self._schedule = regular(self.intervals, 4) or daily(gap)
        self._count_slot(now)
        if gap < ACTIVATION_GAP:
            self.burst_intervals.append(gap)
            return False
        self.activation_count += 1
        self.activations_by_day_slot[_week_slot(now) % DAY_SLOTS] += 1
        self.activations.append(now - self.last_activation)
        self.last_activation = now
        self._burst_schedule = regular(self.activations, 3)
        self.daily.add(now)
        return True

    def _count_slot(self, now: float) -> None:
        slot = _week_slot(now)
        self.by_week_slot[slot] += 1
        self.by_day_slot[slot % DAY_SLOTS] += 1
        absolute = int(now // SLOT_SECONDS)
        if absolute != self._last_slot:
            self._last_slot = absolute
            self.busy_week_slot[slot] += 1
            self.busy_day_slot[slot % DAY_SLOTS] += 1

    @property
    def schedule(self) -> Schedule | None:
        """The fixed rate of single requests, when there is one."""
        return self._schedule

    @property
    def burst_schedule(self) -> Schedule | None:
        """The fixed rate at which bursts start, when there is one."""
        return self._burst_schedule

    def next_due(self, now: float) -> float | None:
        """The earliest time the next request (or burst) is due on the schedule found, a period on for each
        one that did not come by ``now``; None without a schedule."""
        schedule = self._schedule or self._burst_schedule
        if schedule is None:
            return None
        last = self.last if self._schedule is not None else self.last_activation
        periods = max(math.ceil((now - last - schedule.jitter) / schedule.period), 1)
        return last + periods * schedule.period - schedule.jitter

    def burst_keep_alive(self) -> float:
        """How long a burst's requests stay apart at most (the longest recent gap within bursts)."""
        return max(self.burst_intervals, default=0.0)

    def activation_gap_quantile(self, q: float) -> float | None:
        """The ``q`` quantile of recent gaps between burst starts, or None before three of them."""
        if len(self.activations) < 3:
            return None
        gaps = sorted(self.activations)
        return gaps[min(len(gaps) - 1, int(q * len(gaps)))]

    def activation_rate(self, now: float) -> float:
        """Bursts started per second around this time of day: each is a cold start if the model is not kept.

        The count in the slots within ``TIME_OF_DAY_REACH`` of ``now``'s, over the days seen, is pulled
        towards the rate over all time by one day's worth of it, so a model seen for a day or two, or one
        whose bursts come at any hour, ranks by its overall rate."""
        span = max(now - self.first, SPAN_FLOOR)
        overall = self.activation_count / span
        days = math.floor(span / DAY)
        if days < 1:
            return overall
        near = _near(self.activations_by_day_slot, now, TIME_OF_DAY_REACH)
        window = (2 * TIME_OF_DAY_REACH + 1) * SLOT_SECONDS
        return (near + overall * window) / ((days + 1) * window)

    def in_burst_rate(self) -> float:
        """Requests per second within a burst, from the recent gaps inside bursts; 0 before any."""
        gaps = self.burst_intervals
        return len(gaps) / sum(gaps) if gaps and sum(gaps) > 0 else 0.0

    def burst_size(self) -> float:
        """Requests per burst, on average: how many requests one cold start stands for."""
        return self.count / self.activation_count

    def recent_rate(self) -> float:
        """Requests per second over the recent inter-arrival times."""
        return len(self.intervals) / sum(self.intervals) if self.intervals and sum(self.intervals) > 0 else 0.0

    def rate(self) -> float:
        """Requests per second since the first."""
        return (self.count - 1) / (self.last - self.first) if self.last > self.first else 0.0

    def interval_quantile(self, q: float) -> float | None:
        """The ``q`` quantile of recent inter-arrival times, or None before four of them."""
        if len(self._sorted) < 4:
            return None
        return self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]

    def chance_within(self, now: float, horizon: float) -> float:
        """P(next request within ``horizon`` | none for ``now - last``), from recent inter-arrival times."""
        elapsed = now - self.last
        if elapsed >= ACTIVATION_GAP and len(self.activations) >= 3:
            return self._burst_chance(now, horizon)
        values = self._sorted
        if len(values) < 4:
            return 0.5 * math.exp(-elapsed / max(horizon, 1.0))
        longer = len(values) - bisect_right(values, elapsed)
        if longer == 0:
            return 0.0
        return (bisect_right(values, elapsed + horizon) - (len(values) - longer)) / longer

    def busy_chance(self, start: float) -> float:
        """The share of past weeks (or days, in the first two weeks) with a request in the slot at ``start``.

        Unlike the mean count of :meth:`expected_in`, a model whose requests come in bursts at random times
        scores low here: twenty requests in one day's slot are one busy slot, not twenty."""
        slot = _week_slot(start)
        span = max(start - self.first, 0.0)
        if span >= 2 * WEEK:
            seen, busy = math.floor(span / WEEK), self.busy_week_slot[slot]
        else:
            seen, busy = math.floor(span / DAY), self.busy_day_slot[slot % DAY_SLOTS]
        return busy / seen if seen >= 1 else 0.0

    def _burst_chance(self, now: float, horizon: float) -> float:
        """P(the next burst starts within ``horizon``), once the last burst is over, from the gaps between
        burst starts; the few gaps kept are pulled towards a memoryless gap of the same mean."""
        since = now - self.last_activation
        gaps = self.activations
        longer = [g for g in gaps if g > since]
        hits = sum(1 for g in longer if g <= since + horizon)
        prior = 1.0 - math.exp(-horizon * len(gaps) / sum(gaps))
        return (hits + prior) / (len(longer) + 1)

    def expected_in(self, start: float, seconds: float) -> float:
        """Requests expected in ``[start, start + seconds)`` from the time of week (or of day, in the first
        two weeks), as the mean over the past weeks or days that covered it."""
        slot = _week_slot(start)
        span = max(start - self.first, 0.0)
        if span >= 2 * WEEK:
            seen = math.floor(span / WEEK)
            count = self.by_week_slot[slot]
        else:
            seen = math.floor(span / DAY)
            count = self.by_day_slot[slot % DAY_SLOTS]
        if seen < 1:
            return 0.0
        return count / seen * seconds / SLOT_SECONDS

    def daily_near(self, start: float, per_day: float) -> bool:
        """True when a model of at most ``per_day`` requests a day had, on average, one a day in the slot at
        ``start`` or a neighbouring one.

        A daily job's hour moves by more than a quarter hour from one day to the next: one day's request cannot
        say which slot the next falls in, so the slots either side of it count too. Busier models are left to
        the slot's own count (:meth:`expected_in`): for them the wider window would cost memory all day. A day
        counts as seen from the slot before the first request's, a day on: that is when its neighbours are
        prepared, and :meth:`expected_in` would not count that day until a slot later."""
        if self.count > per_day * max(start - self.first, DAY) / DAY:
            return False
        days = math.floor(max(start + 2 * SLOT_SECONDS - self.first, 0.0) / DAY)
        if days < 1:
            return False
        return _near(self.by_day_slot, start, 1) >= days


def _near(by_day_slot: list[int], now: float, reach: int) -> int:
    """The count in ``now``'s slot of the day and the ``reach`` slots either side of it."""
    slot = _week_slot(now) % DAY_SLOTS
    return sum(by_day_slot[(slot + k) % DAY_SLOTS] for k in range(-reach, reach + 1))


def _week_slot(now: float) -> int:
    return int((now % WEEK) // SLOT_SECONDS)

"""The daily window a model's bursts keep to on the days it works: office hours, read from its burst starts.
Pure bookkeeping on times passed in; :class:`~modelserve.prewarm.patterns.ArrivalHistory` keeps one per model."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass
from itertools import pairwise

DAY = 86400.0
HOUR = 3600.0
WINDOW_DAYS = 8  # days of burst starts kept per model: a week back, and the day before that
MAX_WINDOW = 16 * 3600.0  # a daily window leaves at least 8 quiet hours a day
WINDOW_ALPHA = 0.05  # a window is read when bursts at random hours would leave the quiet seen less often
MIN_RATED = 3600.0  # a window is rated as if at least this long: two bursts a minute apart are no hourly rate
WINDOW_LEAD = 1800.0  # a window's model is expected from this long before the earliest burst start seen
WINDOW_LAG = 900.0  # ... until this long after the latest
QUIET_SEEN = 7200.0  # a window seen on one day is read once this much quiet was watched before and after it
SILENT_GAPS = 3.0  # mean gaps between bursts after its opening without one, for a window to be taken as shut
MAX_SILENT = 3600.0  # ... but never longer than this: the first day of a weekend costs no more
READ_EVERY = 600.0  # seconds between two readings of a model's window as new bursts start


@dataclass(frozen=True, slots=True)
class Window:
    """The hours of the UTC day a model's bursts start in: from ``opens`` (seconds into the day) for
    ``length`` seconds, the earliest and the latest burst start seen."""

    opens: float
    length: float


class DailyWindow:
    """One model's burst starts of the last ``WINDOW_DAYS``, and the daily window they keep to, if any.

    Office hours: bursts at random within the same hours on working days, none at night or at weekends. No
    single interval is regular, so no schedule is found; what foretells the next burst is the hour and the
    day. A window is read when all burst starts seen fall within ``MAX_WINDOW`` of the day and bursts at
    random hours would leave the quiet seen with chance under ``WINDOW_ALPHA`` (the widest of ``n`` gaps
    between random points on a circle spans ``q`` of it with chance about ``n (1 - q)^(n - 1)``). Its rate is
    the bursts per hour of window on the past days it opened; today's, still under way, would read low."""

    def __init__(self) -> None:
        self.starts: deque[float] = deque()
        self._window: Window | None = None
        self._stale = False
        self._by_day: Counter[int] = Counter()  # burst starts per day the window opened, by day (0: the first)
        self._read_at = -math.inf
        self._hours = [0] * 24  # burst starts kept, by hour of the day

    def add(self, start: float) -> None:
        """Record the start of a burst."""
        starts, hours = self.starts, self._hours
        starts.append(start)
        hours[int(start % DAY // HOUR)] += 1
        while start - starts[0] > WINDOW_DAYS * DAY:
            hours[int(starts.popleft() % DAY // HOUR)] -= 1
        self._stale = True

    @property
    def window(self) -> Window | None:
        """The daily window of the burst starts recorded so far."""
        if self._stale:
            self._window = self._read()
            self._stale = False
        return self._window

    def read(self, now: float) -> Window | None:
        """The daily window, read again after new burst starts at most every ``READ_EVERY``: reading sorts
        them all, and a busy model starts a burst every minute."""
        if self._stale and now - self._read_at >= READ_EVERY:
            self._read_at = now
            return self.window
        return self._window

    def _read(self) -> Window | None:
        starts = self.starts
        count = len(starts)
        if count < 3 or not self._quiet_hours():
            return None
        times = sorted(s % DAY for s in starts)
        gaps = [b - a for a, b in pairwise(times)] + [times[0] + DAY - times[-1]]
        widest = max(range(count), key=gaps.__getitem__)
        quiet = gaps[widest]
        if DAY - quiet > MAX_WINDOW or count * (1.0 - quiet / DAY) ** (count - 1) >= WINDOW_ALPHA:
            return None
        # The earliest and latest of n starts at random within the hours fall short of them by about a gap
        # between starts at each end (the range of n uniform points spans (n - 1)/(n + 1) of their interval):
        # read from a few days' bursts, the hours reach that far past the starts seen.
        length = DAY - quiet
        margin = min(length / (count - 1), (MAX_WINDOW - length) / 2)
        opens = times[(widest + 1) % count] - margin
        self._by_day = Counter(int((start - opens + 1.0) // DAY) for start in starts)
        return Window(opens, length + 2 * margin)

    def _quiet_hours(self) -> bool:
        """True when some ``DAY - MAX_WINDOW`` hours in a row (less one, for the hours a quiet stretch only
        partly covers) saw no burst start: the test a busy model fails without sorting its starts."""
        hours = self._hours
        need = int((DAY - MAX_WINDOW) // HOUR) - 1
        run = 0
        for count in hours + hours:
            run = run + 1 if count == 0 else 0
            if run >= need:
                return True
        return False

    @staticmethod
    def _day(at: float, opens: float) -> int:
        """Which day's occurrence of a window opening at ``opens`` the time ``at`` (within it) belongs to."""
        return int((at - opens + 1.0) // DAY)

    def ready(self, now: float, watched: float) -> bool:
        """True when the window was seen on two days, or on one and the policy, watching since ``watched``, has
        seen the rest of that day quiet (a day since it started watching, or ``QUIET_SEEN`` either side):
        before then, a morning's bursts would read as a window that shuts at noon."""
        if len(self._by_day) >= 2 or now - watched >= DAY:
            return True
        return now - self.starts[-1] >= QUIET_SEEN and self.starts[0] - watched >= QUIET_SEEN

    def current(self, now: float) -> float | None:
        """The opening (absolute) of the window occurrence ``now`` falls in, from ``WINDOW_LEAD`` before it to
        ``WINDOW_LAG`` after its close; None outside every occurrence, or without a window."""
        window = self._window
        if window is None:
            return None
        start = math.floor((now - window.opens + WINDOW_LEAD) / DAY) * DAY + window.opens
        return start if now <= start + window.length + WINDOW_LAG else None

    def span(self, now: float) -> tuple[float, float] | None:
        """The opening (absolute) and length of the occurrence ``now`` falls in or last did; None without a
        window."""
        window = self._window
        if window is None:
            return None
        return math.floor((now - window.opens + WINDOW_LEAD) / DAY) * DAY + window.opens, window.length

    def closes(self, now: float) -> float | None:
        """When the occurrence ``now`` falls in ends, ``WINDOW_LAG`` after its latest burst start; None outside."""
        start = self.current(now)
        window = self._window
        return None if start is None or window is None else start + window.length + WINDOW_LAG

    def upcoming(self, now: float, watched: float) -> float | None:
        """The opening of the next occurrence (or the current one) expected to open, within a week."""
        window = self._window
        if window is None:
            return None
        start = math.floor((now - window.opens) / DAY) * DAY + window.opens
        if now > start + window.length + WINDOW_LAG:
            start += DAY
        for _ in range(7):
            if self.expects(start, now, watched):
                return start
            start += DAY
        return None

    def expects(self, start: float, now: float, watched: float) -> bool:
        """Whether the occurrence opening at ``start`` is expected to open, as seen at ``now`` by a policy that
        has watched requests since ``watched``.

        A burst in it says yes; silence for ``SILENT_GAPS`` mean gaps (at most ``MAX_SILENT``) after it opens
        says no; before then, the same day a week before says, or else the day before (a weekend's first day
        is then expected, and shut once silent), or else nothing seen: yes."""
        window = self._window
        if window is None:
            return False
        span = window.length + WINDOW_LAG
        if self._had(start, min(now, start + span)):
            return True
        rate = self._rate(self._day(start, window.opens), window)
        if now > start + min(SILENT_GAPS / rate if rate > 0.0 else MAX_SILENT, MAX_SILENT):
            return False
        if start - 7 * DAY - WINDOW_LEAD >= watched:
            return self._had(start - 7 * DAY, start - 7 * DAY + span)
        before = start - DAY
        if before - WINDOW_LEAD < watched:
            return True
        if before + span <= now:
            return self._had(before, before + span)
        return self.expects(before, now, watched)  # the day before is still to come: as it is expected

    def _had(self, start: float, until: float) -> bool:
        """True when a burst started from ``WINDOW_LEAD`` before ``start`` until ``until``."""
        starts = self.starts
        index = bisect_left(starts, start - WINDOW_LEAD)
        return index < len(starts) and starts[index] <= until

    def _rate(self, today: int, window: Window) -> float:
        """Bursts per second within the window on the days before ``today`` it opened (or, before any, today)."""
        past = [count for day, count in self._by_day.items() if day < today] or list(self._by_day.values())
        return sum(past) / (max(window.length, MIN_RATED) * len(past))

    def rate(self, now: float, watched: float) -> float:
        """Bursts per second expected at ``now``: the window's rate within an occurrence expected to open
        (from ``WINDOW_LEAD`` before it), none outside."""
        start = self.current(now)
        window = self._window
        if start is None or window is None or not self.expects(start, now, watched):
            return 0.0
        return self._rate(self._day(start, window.opens), window)

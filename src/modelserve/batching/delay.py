"""When a batch should wait for more requests: what the batcher has seen of its traffic, and the rule.

``max_queue_delay_ms`` is how long a batch *may* wait to fill, not how long it must. Waiting pays
only when other requests arrive in time to join; when none can, it is latency spent for nothing
(one client calling in a loop would pay the whole delay on every request). So the batcher keeps two
measurements, updated in a few integer and float operations per request:

- the inter-arrival time, an exponentially weighted average of the gaps between submits;
- the population: the most requests it has had in flight at once (queued or in a running batch),
  over the last one to two windows of ``window`` requests. Clients that wait for their answer
  before sending again (every benchmark, most services calling a model) are a closed loop: with N
  of them and k requests in flight, at most N - k more can arrive before an answer goes out.

and holds the oldest request only while another is expected within its deadline (see
``hold_until``). Until a first window has been seen there is no population to judge by, and the
delay holds as configured, as Triton's does.
"""

from __future__ import annotations

import math

# Weight of the newest gap in the inter-arrival average: it follows a change of load within some
# ten requests, yet one long gap (the time a batch takes to run and be answered) moves it by an
# eighth only.
_SMOOTHING = 0.125


class Traffic:
    """The arrival estimate one batcher keeps: inter-arrival time and client population."""

    __slots__ = ("_peak", "_peak_before", "arrivals", "gap_ns", "last_ns", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("the population window must hold at least one request")
        self.window = window
        self.arrivals = 0
        self.last_ns = 0  # when the latest request arrived
        self.gap_ns = math.inf  # average time between arrivals; unknown before the second
        self._peak = 0  # most requests in flight at once in this window
        self._peak_before = 0  # ... and in the window before it

    @property
    def population(self) -> float:
        """How many requests can be in flight at once, as far as recent traffic shows; infinite
        (no bound) until a whole window has been seen."""
        if self.arrivals < self.window:
            return math.inf
        return max(self._peak, self._peak_before)

    def arrived(self, now_ns: int, in_flight: int) -> None:
        """Count a request arriving at ``now_ns``, with ``in_flight`` requests (it included) in the batcher."""
        if self.arrivals:
            gap = now_ns - self.last_ns
            self.gap_ns = gap if self.arrivals == 1 else self.gap_ns + (gap - self.gap_ns) * _SMOOTHING
        self.last_ns = now_ns
        self.arrivals += 1
        if in_flight > self._peak:
            self._peak = in_flight
        if self.arrivals % self.window == 0:
            # A window's peak is kept for one more window, so a population is never judged from a
            # window just begun.
            self._peak_before, self._peak = self._peak, 0


def hold_until(
    now_ns: int,
    deadline_ns: int,
    *,
    missing: int,
    in_flight: int,
    population: float,
    last_arrival_ns: int,
    gap_ns: float,
) -> int | None:
    """The time to look again at a batch worth holding, or None to run it now.

    ``missing`` is how many samples the batch lacks to reach its target, ``deadline_ns`` when its
    oldest request's ``max_queue_delay_ms`` runs out. The batch runs now when it is full, when its
    deadline has come, or when every request the population can have in flight already is (the
    client calling in a loop: its one request is the whole population). Otherwise it waits while
    the next arrival is expected before the deadline: one average gap from now, or, once the
    silence since the last arrival has outlasted the average gap, as long again as that silence
    (arrivals have slowed, and the silence is the best measure of by how much). The answer is when
    that stops being true; any arrival before it asks again. It is never past the deadline, and a
    batch that fills, or whose population is all in, runs as soon as its last request comes.
    """
    if missing <= 0 or now_ns >= deadline_ns:
        return None
    if population == math.inf:
        return deadline_ns  # no population known yet: the configured delay
    if population - in_flight < 1:
        return None
    # Holding while now + max(gap, now - last) <= deadline, solved for now.
    until = min(deadline_ns - gap_ns, (last_arrival_ns + deadline_ns) / 2)
    return math.ceil(until) if until > now_ns else None

"""The hot path of the traffic history: each answered request adds to an in-memory bucket, nothing more.

``record`` does a dictionary lookup, a few integer additions and a deque append under a lock that
only the flusher takes besides it, for as long as it swaps one dictionary for another; no I/O, no
allocation once a bucket exists. This module imports no database library, so a server that never
writes pays nothing to import it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from modelserve.errors import Outcome, classify
from modelserve.history.schema import LATENCY_BOUNDS, OUTCOMES

_FIRST_LATENCY = len(OUTCOMES)
# Raw arrival times kept per model for policies that need inter-arrival times finer than a bucket:
# the last RECENT_LIMIT arrivals, of which those within RECENT_WINDOW_S are answered.
RECENT_WINDOW_S = 600.0
RECENT_LIMIT = 2048

_COLUMN = {outcome: column for column, outcome in enumerate(Outcome)}  # the outcome's count in Bucket.counts


@dataclass(slots=True)
class Bucket:
    """What one model version's requests of one time bucket added up to, not yet written."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(OUTCOMES) + len(LATENCY_BOUNDS) + 1))
    latency_sum_s: float = 0.0

    def add(self, other: Bucket) -> None:
        """Fold ``other`` into this one (a batch that could not be written goes back this way)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.latency_sum_s += other.latency_sum_s


BucketKey = tuple[str, str, int]  # model, version, bucket start (epoch seconds)


class TrafficRecorder:
    """Per-model time buckets of answered requests, kept until the flusher takes them."""

    def __init__(self, bucket_s: int, clock: Callable[[], float] = time.time) -> None:
        # Wall-clock time, not monotonic: bucket starts are dates other processes and policies compare.
        self.bucket_s = bucket_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[BucketKey, Bucket] = {}
        self._recent: dict[str, deque[float]] = {}

    def record_request(self, model: str, version: str, latency_s: float, error: BaseException | None) -> None:
        """Count one answered request that ended with ``error`` (None: success), as its error is classified.

        ``model`` must be one the server knows (``ServerState.finish_request`` sees to it): a name a
        caller made up would grow the table without bound."""
        self.record(model, version, latency_s, Outcome.OK if error is None else classify(error).outcome)

    def record(self, model: str, version: str, latency_s: float, outcome: Outcome = Outcome.OK) -> None:
        """Count one request that arrived ``latency_s`` ago and ended with ``outcome``."""
        arrival = self._clock() - latency_s
        key = (model, version, int(arrival // self.bucket_s) * self.bucket_s)
        histogram_column = _FIRST_LATENCY + bisect_left(LATENCY_BOUNDS, latency_s)
        with self._lock:
            bucket = self._pending.get(key)
            if bucket is None:
                bucket = self._pending[key] = Bucket()
            counts = bucket.counts
            counts[_COLUMN[outcome]] += 1
            counts[histogram_column] += 1
            bucket.latency_sum_s += latency_s
            recent = self._recent.get(model)
            if recent is None:
                recent = self._recent[model] = deque(maxlen=RECENT_LIMIT)
            recent.append(arrival)

    def take(self) -> dict[BucketKey, Bucket]:
        """Everything recorded since the last take; the recorder starts afresh."""
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def give_back(self, buckets: dict[BucketKey, Bucket], keep: int) -> dict[BucketKey, Bucket]:
        """Return buckets that could not be written, to go with the next take: the newest ``keep`` of them.

        The older ones are dropped, and returned to say what was lost: while the database is down,
        memory holds at most ``keep`` buckets plus those recorded since the last take.
        """
        # Chosen and copied before the lock is taken: requests being recorded wait only for the merge of
        # what was recorded since the take, not for the whole backlog.
        oldest = heapq.nsmallest(len(buckets) - keep, buckets, key=lambda k: k[2]) if len(buckets) > keep else []
        dropped = {key: buckets[key] for key in oldest}
        kept = {key: bucket for key, bucket in buckets.items() if key not in dropped}
        with self._lock:
            fresh, self._pending = self._pending, kept
            for key, bucket in fresh.items():
                if (pending := kept.get(key)) is None:
                    kept[key] = bucket
                else:
                    pending.add(bucket)
        return dropped

    def pending(self) -> int:
        """How many buckets wait to be written."""
        return len(self._pending)

    def recent_arrivals(self, model: str, within_s: float = RECENT_WINDOW_S) -> list[float]:
        """Arrival times (epoch seconds, oldest first) of ``model``'s requests in the last ``within_s``
        seconds, at most ``RECENT_LIMIT``; kept in memory only, so a restart starts them afresh."""
        since = self._clock() - min(within_s, RECENT_WINDOW_S)
        with self._lock:
            arrivals = list(self._recent.get(model, ()))
        # Arrivals are recorded when answered, so a slow request may precede a faster later one: sort.
        return sorted(t for t in arrivals if t >= since)

    def inter_arrival_times(self, model: str, within_s: float = RECENT_WINDOW_S) -> list[float]:
        """Seconds between consecutive recent arrivals of ``model``: what an idle-time policy learns from."""
        arrivals = self.recent_arrivals(model, within_s)
        return [later - earlier for earlier, later in itertools.pairwise(arrivals)]

"""Reading the traffic history back, in the shapes a pre-warming policy learns from.

A policy wants, per model: how many requests arrived in each step of a window (rates, time of day and
week, fixed schedules), the idle times between steps with traffic (Shahrad et al.'s keep-alive
histogram works at one-minute steps), and how its requests ended (``not_ready`` counts cold starts).
Arrivals finer than a bucket live in memory only (``TrafficRecorder.recent_arrivals``).
The database trails the server by up to HISTORY_FLUSH_INTERVAL_SEC.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from modelserve.history.schema import LATENCY_BOUNDS, LATENCY_COLUMNS, OUTCOMES, TrafficBucket


@dataclass(frozen=True)
class ArrivalSeries:
    """Arrivals of one model (all versions) per ``step`` seconds, from ``start``; every step present."""

    model: str
    start: int
    step: int
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        """Arrivals in the whole window."""
        return sum(self.counts)

    def idle_times(self) -> list[int]:
        """Seconds between consecutive steps with arrivals (0 for adjacent ones), at step resolution."""
        busy = [index for index, count in enumerate(self.counts) if count]
        return [(later - earlier - 1) * self.step for earlier, later in itertools.pairwise(busy)]


@dataclass(frozen=True)
class TrafficSummary:
    """How one model's requests of a window ended, and how long they took."""

    model: str
    outcomes: dict[str, int]
    latency_histogram: tuple[int, ...]  # counts per LATENCY_BOUNDS step, the last one above 10 s
    latency_sum_s: float

    @property
    def requests(self) -> int:
        """Requests of the window, whatever their outcome."""
        return sum(self.outcomes.values())

    def latency_quantile(self, q: float) -> float:
        """The upper bound of the histogram step holding quantile ``q`` (inf above the last bound)."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile {q} is outside [0, 1]")
        rank = q * sum(self.latency_histogram)
        seen = 0
        for bound, count in zip((*LATENCY_BOUNDS, math.inf), self.latency_histogram, strict=True):
            seen += count
            if count and seen >= rank:
                return bound
        return math.nan  # no requests


class TrafficHistory:
    """Queries on the traffic history; safe to share between threads (each call takes a connection)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def models(self, since: float, until: float) -> list[str]:
        """Models with requests that arrived in ``[since, until)``, by name."""
        query = (
            select(TrafficBucket.model)
            .where(TrafficBucket.bucket_start >= math.floor(since), TrafficBucket.bucket_start < until)
            .distinct()
            .order_by(TrafficBucket.model)
        )
        with self._engine.connect() as connection:
            return list(connection.scalars(query))

    def arrivals(
        self, since: float, until: float, step: int, models: list[str] | None = None
    ) -> dict[str, ArrivalSeries]:
        """Per model, the arrivals of ``[since, until)`` in steps of ``step`` seconds (whole buckets:
        a step is best a multiple of HISTORY_BUCKET_SEC). Models without arrivals are left out."""
        if step < 1 or until <= since:
            raise ValueError(f"need step >= 1 s and since < until; got step={step}, [{since}, {until})")
        start = int(since // step) * step
        steps = math.ceil((until - start) / step)
        query = (
            select(TrafficBucket.model, TrafficBucket.bucket_start, func.sum(TrafficBucket.requests))
            .where(TrafficBucket.bucket_start >= start, TrafficBucket.bucket_start < until)
            .group_by(TrafficBucket.model, TrafficBucket.bucket_start)
        )
        if models is not None:
            query = query.where(TrafficBucket.model.in_(models))
        counts: dict[str, list[int]] = {}
        with self._engine.connect() as connection:
            for model, bucket_start, requests in connection.execute(query):
                series = counts.setdefault(model, [0] * steps)
                series[(bucket_start - start) // step] += int(requests)
        return {model: ArrivalSeries(model, start, step, tuple(series)) for model, series in sorted(counts.items())}

    def summary(self, model: str, since: float, until: float) -> TrafficSummary:
        """Outcomes and latency of ``model``'s requests that arrived in ``[since, until)``, all versions."""
        columns = [func.coalesce(func.sum(getattr(TrafficBucket, name)), 0) for name in (*OUTCOMES, *LATENCY_COLUMNS)]
        query = select(*columns, func.coalesce(func.sum(TrafficBucket.latency_sum_s), 0.0)).where(
            TrafficBucket.model == model,
            TrafficBucket.bucket_start >= math.floor(since),
            TrafficBucket.bucket_start < until,
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).one()
        values = [int(value) for value in row[:-1]]
        return TrafficSummary(
            model,
            dict(zip(OUTCOMES, values[: len(OUTCOMES)], strict=True)),
            tuple(values[len(OUTCOMES) :]),
            float(row[-1]),
        )

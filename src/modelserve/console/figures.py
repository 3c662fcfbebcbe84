"""What the console shows, as plain data: each model version's state and footprint, its model's traffic over
the last minute (requests/s, p50 and p99 latency, mean batch size) and cold starts, the memory budgets and
what holds them, and the pre-warming policy's report (``prewarm/report.py``, as GET /v2/prewarm answers).

Traffic figures come from the Prometheus collectors the server keeps anyway (``Metrics``), read in process
rather than scraped as text, so nothing is added to the request path: a reading of the cumulative counters
is kept at most once a second, and a figure is the difference between now and the oldest reading within
``WINDOW_S``. Percentiles are interpolated within the latency histogram's buckets, as Prometheus'
``histogram_quantile`` does; above the highest finite bucket they read as that bucket's bound. The metrics
are labelled by model, not version, so versions of one model show the same traffic. Under ``--workers N``
the figures are those of the worker that answers.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from typing_extensions import TypedDict

from modelserve.models.manager import ModelManager
from modelserve.models.records import ModelState, ModelVersion
from modelserve.observability.metrics import LATENCY_BUCKETS, Metrics
from modelserve.prewarm.live import LivePrewarmer
from modelserve.prewarm.report import PrewarmReport, report

WINDOW_S = 60.0  # traffic figures cover about the last minute
KEEP_EVERY_S = 1.0  # readings closer together than this are not kept: the window holds about 60 of them
BOUNDS = (*LATENCY_BUCKETS, math.inf)  # the latency histogram's buckets, as its samples' ``le`` labels read


class Traffic(TypedDict):
    """A model's requests over the window (None where the window is empty or too short to say)."""

    requests_per_second: float | None
    p50_ms: float | None
    p99_ms: float | None
    batch_size: float | None  # mean samples per runtime call
    cold_starts: int  # since the server started


class ModelRow(TypedDict):
    """One model version as the console's table shows it."""

    name: str
    version: int | None
    state: str
    reason: str
    pinned: bool
    memory_bytes: dict[str, int]  # by kind of memory: CPU, GPU
    traffic: Traffic


class Budget(TypedDict):
    """A memory budget and how much of it the loaded models hold."""

    kind: str
    setting: str
    limit_bytes: int
    held_bytes: int


class Memory(TypedDict):
    """The process's memory against its limits (0: no limit), the budgets, and the versions holding memory."""

    rss_bytes: int
    soft_limit_bytes: int
    hard_limit_bytes: int
    budgets: list[Budget]
    occupants: list[ModelRow]


class Summary(TypedDict):
    """Everything ``GET /ui/summary`` answers."""

    window_seconds: float | None
    models: list[ModelRow]
    memory: Memory
    prewarming: PrewarmReport | None  # None: PREWARM_POLICY is none; else what GET /v2/prewarm answers


@dataclass(frozen=True, slots=True)
class Counts:
    """One model's cumulative counters at one moment."""

    latency: tuple[float, ...]  # requests at or below each latency bucket's bound, the last +Inf: all of them
    batches: float
    samples: float
    cold_starts: float


class Window:
    """Readings of the metrics over the last ``WINDOW_S``, and the traffic figures between them."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics, self._clock = metrics, clock
        # A first reading at start: the first page opened has a window to compute rates over.
        self._readings: deque[tuple[float, dict[str, Counts]]] = deque([(clock(), read_counts(metrics))])

    def traffic(self) -> tuple[float | None, dict[str, Traffic]]:
        """The window's length (None within a moment of the start) and each model's traffic over it."""
        now, counts = self._clock(), read_counts(self._metrics)
        readings = self._readings
        while len(readings) > 1 and now - readings[1][0] >= WINDOW_S:  # the oldest kept is the last beyond it
            readings.popleft()
        base_at, base = readings[0]
        if now - readings[-1][0] >= KEEP_EVERY_S:
            readings.append((now, counts))
        span = now - base_at
        return (span or None), {model: _traffic(counts[model], base.get(model), span) for model in counts}


def read_counts(metrics: Metrics) -> dict[str, Counts]:
    """Every model's latency histogram (summed over protocols), batches and cold starts, as counted now."""
    latency: defaultdict[str, defaultdict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in metrics.duration.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                latency[sample.labels["model"]][float(sample.labels["le"])] += sample.value
    batches: defaultdict[str, float] = defaultdict(float)
    samples: defaultdict[str, float] = defaultdict(float)
    for family in metrics.batch_size.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                batches[sample.labels["model"]] += sample.value
            elif sample.name.endswith("_sum"):
                samples[sample.labels["model"]] += sample.value
    cold: defaultdict[str, float] = defaultdict(float)
    for family in metrics.cold_starts.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                cold[sample.labels["model"]] += sample.value
    empty = (0.0,) * len(BOUNDS)
    return {
        model: Counts(
            tuple(latency[model][b] for b in BOUNDS) if model in latency else empty,
            batches[model],
            samples[model],
            cold[model],
        )
        for model in latency.keys() | batches.keys() | cold.keys()
    }


def quantile(q: float, bounds: tuple[float, ...], cumulative: tuple[float, ...]) -> float | None:
    """The ``q`` quantile of a histogram's cumulative bucket counts, interpolated within its bucket; None
    when it counts nothing."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _traffic(now: Counts, base: Counts | None, span: float) -> Traffic:
    latency = now.latency if base is None else tuple(a - b for a, b in zip(now.latency, base.latency, strict=True))
    batches = now.batches - (base.batches if base else 0.0)
    samples = now.samples - (base.samples if base else 0.0)
    p50, p99 = quantile(0.5, BOUNDS, latency), quantile(0.99, BOUNDS, latency)
    return Traffic(
        requests_per_second=latency[-1] / span if span and latency else None,
        p50_ms=None if p50 is None else p50 * 1000,
        p99_ms=None if p99 is None else p99 * 1000,
        batch_size=samples / batches if batches else None,
        cold_starts=int(now.cold_starts),
    )


def row(record: ModelVersion, traffic: Traffic | None, span: float | None) -> ModelRow:
    """A version's row: its record, and its model's traffic (none counted yet: no request since the start)."""
    return ModelRow(
        name=record.name,
        version=record.version,
        state=str(record.state),
        reason=record.reason,
        pinned=record.pinned,
        # What the version holds now: an unloaded one keeps its last measurement in its record.
        memory_bytes=dict(record.memory) if record.runtime is not None or record.state is ModelState.LOADING else {},
        traffic=traffic
        or Traffic(requests_per_second=0.0 if span else None, p50_ms=None, p99_ms=None, batch_size=None, cold_starts=0),
    )


async def summary(manager: ModelManager, window: Window, prewarmer: LivePrewarmer | None) -> Summary:
    """What the console shows now; asks the repository which models it holds (off the event loop)."""
    span, traffic = window.traffic()
    records = await manager.index()
    rss, _ = manager.watchdog.reading()
    holding = manager.holding()
    budgets = [
        Budget(
            kind=b.kind,
            setting=b.setting,
            limit_bytes=b.limit_bytes,
            held_bytes=sum(r.memory.get(b.kind, 0) for r in holding),
        )
        for b in manager.budgets
    ]
    return Summary(
        window_seconds=span,
        models=[row(r, traffic.get(r.name), span) for r in records],
        memory=Memory(
            rss_bytes=rss,
            soft_limit_bytes=manager.watchdog.soft_bytes,
            hard_limit_bytes=manager.watchdog.hard_bytes,
            budgets=budgets,
            occupants=sorted(
                (row(r, traffic.get(r.name), span) for r in holding), key=lambda o: -sum(o["memory_bytes"].values())
            ),
        ),
        prewarming=None if prewarmer is None else report(prewarmer, {r.name for r in records}, time.time()),
    )

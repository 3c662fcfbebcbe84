"""Prometheus metrics under the runbooks' names, on a registry passed in (no module globals), so any
number of servers can live in one test process.

Events (requests, batches, loads) update counters and histograms where they happen. State (queue
depth, requests in flight, memory, models loaded) is read from the model manager by ``refresh``: at
each scrape, and every second in worker processes, whose values prometheus-client's multiprocess mode
sums across processes (``PROMETHEUS_MULTIPROC_DIR``, set by ``modelserve serve --workers N``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from modelserve.errors import classify
from modelserve.observability import pools
from modelserve.observability.cost_metrics import CostMetrics
from modelserve.observability.generation_metrics import GenerationMetrics
from modelserve.observability.gpu import GpuCollector
from modelserve.observability.pools import PoolWatch
from modelserve.observability.prewarm_metrics import PrewarmMetrics
from modelserve.observability.rollout_metrics import RolloutMetrics

if TYPE_CHECKING:
    from modelserve.models.records import ModelVersion

# 0.5 ms to 10 s: fast CPU models and slow GPU batches land in distinct buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    """Where worker processes share their values, when they do."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The collectors the server updates; the protocols call ``observe_request`` once per request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "model_serving_requests",
            "Inference requests answered, by outcome (status: success|error; code: HTTP status or gRPC code).",
            ["model", "version", "protocol", "status", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "model_serving_request_duration_seconds",
            "Time from receiving an inference request to having its response, in seconds.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "model_serving_rejected_requests",
            "Requests refused without running, by reason (inference, and any request refused by authentication).",
            ["model", "reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "model_serving_batch_size",
            "Samples per runtime call made by the dynamic batcher.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_time = Histogram(
            "model_serving_queue_duration_seconds",
            "Time a request waited in its model's queue before its batch started, in seconds.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_time = Histogram(
            "model_serving_inference_duration_seconds",
            "Time the runtime took to execute one batch, in seconds.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.load_duration = Histogram(
            "model_serving_model_load_duration_seconds",
            "Time to load a model version, successful loads only, in seconds.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.load_failures = Counter(
            "model_serving_model_load_failures",
            "Model version loads that failed.",
            ["model"],
            registry=registry,
        )
        self.models_loaded = Gauge(
            "model_serving_models_loaded",
            "Model versions loaded and ready to serve (the largest count of any worker process).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.queue_depth = Gauge(
            "model_serving_queue_depth",
            "Requests waiting in a model's queue (summed over worker processes).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "model_serving_requests_in_flight",
            "Requests inside a model: queued or running (summed over worker processes).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.memory = Gauge(
            "model_serving_model_memory_bytes",
            "Host memory a loaded model version holds, measured as it loaded, in bytes (summed over workers).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.gpu_memory = Gauge(
            "model_serving_model_gpu_memory_bytes",
            "GPU memory a loaded model version holds, measured as it loaded under GPU_MEMORY_FRACTION, in bytes.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.evictions = Counter(
            "model_serving_model_evictions",
            "Models unloaded to make room: reason budget (a load needed room under the memory budget) or "
            "memory_pressure (RSS above MEMORY_SOFT_LIMIT_MB).",
            ["model", "reason"],
            registry=registry,
        )
        self.cold_starts = Counter(
            "model_serving_cold_starts",
            "Inference and metadata requests that arrived while their model was not READY (on-demand mode).",
            ["model"],
            registry=registry,
        )
        self.abandoned = Counter(
            "model_serving_requests_abandoned",
            "Requests that left their model's queue without running because their caller stopped waiting: "
            "disconnected (the HTTP client hung up), cancelled (the gRPC call was) or deadline (its time ran out).",
            ["model", "reason"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "model_serving_response_cache_lookups",
            "Response-cache lookups of the models that enable it: result hit (answered from the cache, no run) or "
            "miss (run, then stored).",
            ["model", "result"],
            registry=registry,
        )
        self.cache_evictions = Counter(
            "model_serving_response_cache_evictions",
            "Answers the response cache dropped, least recently used first, to stay within RESPONSE_CACHE_MB.",
            ["model"],
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "model_serving_response_cache_bytes",
            "Bytes of answers the response cache holds (summed over worker processes).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.memory_rss = Gauge(
            "model_serving_memory_rss_bytes",
            "Resident memory of the server process, in bytes (summed over worker processes).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.memory_pressure = Gauge(
            "model_serving_memory_pressure",
            "0: RSS below MEMORY_SOFT_LIMIT_MB; 1: above it, loads refused; 2: above MEMORY_HARD_LIMIT_MB, "
            "liveness failing (the highest of any worker process).",
            registry=registry,
            multiprocess_mode="livemax",
        )

        # Traffic history: what a database outage cost it.
        self.history_dropped = Counter(
            "model_serving_history_dropped_buckets",
            "Traffic-history buckets dropped unwritten: the oldest beyond HISTORY_MAX_PENDING_BUCKETS while "
            "the database could not be written.",
            registry=registry,
        )
        # The access log: what a log stream too slow for the requests cost it.
        self.access_log_dropped = Counter(
            "model_serving_access_log_dropped_lines",
            "Access log lines dropped unwritten: the log stream took them slower than requests were answered "
            "and the queue to it was full, or it failed.",
            registry=registry,
        )
        # The connection pools of the database engines the process opened (observability/pools.py).
        self.db_pool_size = Gauge(
            "model_serving_db_pool_size",
            "Connections a database engine's pool keeps (DB_POOL_SIZE), by what the engine is for (summed over "
            "workers).",
            ["pool"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.db_pool_checked_out = Gauge(
            "model_serving_db_pool_checked_out",
            "Connections of a database engine's pool in use now (summed over workers).",
            ["pool"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.db_pool_overflow = Gauge(
            "model_serving_db_pool_overflow",
            "Connections a database engine's pool has open beyond its size, at most DB_MAX_OVERFLOW (summed over "
            "workers).",
            ["pool"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.db_pool_waits = Counter(
            "model_serving_db_pool_waits",
            "Checkouts that found every connection of the pool in use and none left to open, and waited.",
            ["pool"],
            registry=registry,
        )
        self.db_pool_wait_seconds = Counter(
            "model_serving_db_pool_wait_seconds",
            "Time checkouts spent waiting for a connection of the pool, in seconds.",
            ["pool"],
            registry=registry,
        )
        self._pool_counts: weakref.WeakKeyDictionary[PoolWatch, tuple[int, float]] = weakref.WeakKeyDictionary()
        self._pool_names: set[str] = set()

        self._shown: set[tuple[str, str]] = set()
        self.generation = GenerationMetrics(registry)
        self.prewarming = PrewarmMetrics(registry)
        self.rollouts = RolloutMetrics(registry)
        self.costs = CostMetrics(registry)
        # Labelled children, looked up once per label set: prometheus-client's labels() costs about a
        # microsecond, five times a request, as much as a small model's share of the batch.
        self._request_children: dict[tuple[str, str, str, int | str], tuple[Counter, Histogram]] = {}
        self._batch_children: dict[str, tuple[Histogram, Histogram, Histogram]] = {}
        self._gpu = GpuCollector()
        if self._gpu.available:
            registry.register(self._gpu)
        # The process's own figures (resident memory, CPU seconds, open files, GC), as prometheus-client
        # exports them on its default registry; with several workers they would describe one of them only.
        if multiprocess_dir() is None:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def observe_request(
        self,
        model: str,
        version: str,
        protocol: str,
        code: int | str,
        seconds: float,
        error: Exception | None = None,
    ) -> None:
        """Count one answered request and its latency; ``code`` is an HTTP status or a gRPC code name.

        ``model`` is a label the server chose (``ServerState.finish_request``: ``unknown`` for a model it
        does not know), never a name a caller sent unchecked, so that clients cannot grow the label set.
        """
        key = (model, version, protocol, code)
        if (children := self._request_children.get(key)) is None:
            children = (
                self.requests.labels(model, version, protocol, request_status(code), str(code)),
                self.duration.labels(model, protocol),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if error is not None and (reason := classify(error).rejection) is not None:
            self.rejected.labels(model, reason).inc()

    def observe_refusal(self, error: Exception) -> None:
        """Count a request other than inference refused before its handler ran (``model=""``)."""
        if (reason := classify(error).rejection) is not None:
            self.rejected.labels("", reason).inc()

    def observe_batch(self, model: str, samples: int, compute_s: float, queued_s: Iterable[float]) -> None:
        """Record one batch a model executed: its size, its compute time, and each request's wait."""
        if (children := self._batch_children.get(model)) is None:
            children = self.batch_size.labels(model), self.compute_time.labels(model), self.queue_time.labels(model)
            self._batch_children[model] = children
        batch_size, compute_time, queue_time = children
        batch_size.observe(samples)
        compute_time.observe(compute_s)
        for seconds in queued_s:
            queue_time.observe(seconds)

    def observe_load(self, model: str, seconds: float, ok: bool) -> None:
        """Record one load of a model version."""
        if ok:
            self.load_duration.labels(model).observe(seconds)
        else:
            self.load_failures.labels(model).inc()

    def observe_eviction(self, model: str, reason: str) -> None:
        """Count a model unloaded to make room."""
        self.evictions.labels(model, reason).inc()

    def observe_cold_start(self, model: str) -> None:
        """Count a request that found its model not READY and waited for it to load."""
        self.cold_starts.labels(model).inc()

    def observe_cache(self, model: str, hit: bool) -> None:
        """Count one response-cache lookup of ``model``."""
        self.cache_lookups.labels(model, "hit" if hit else "miss").inc()

    def observe_cache_eviction(self, model: str) -> None:
        """Count one answer of ``model`` the response cache dropped to make room."""
        self.cache_evictions.labels(model).inc()

    def observe_abandoned(self, model: str, reason: str) -> None:
        """Count a request that left the queue unrun, its caller gone (``batcher.abandoned_reason``)."""
        self.abandoned.labels(model, reason).inc()

    def refresh(self, ready: list[ModelVersion]) -> None:
        """Set the state gauges from the versions serving now; versions gone since read 0."""
        shown: set[tuple[str, str]] = set()
        for record in ready:
            labels = (record.name, str(record.version))
            shown.add(labels)
            self.queue_depth.labels(*labels).set(record.batcher.queued if record.batcher else 0)
            self.in_flight.labels(*labels).set(record.in_flight)
            self.memory.labels(*labels).set(record.memory_bytes)
            self.gpu_memory.labels(*labels).set(record.memory.get("GPU", 0))
        for labels in self._shown - shown:
            for gauge in (self.queue_depth, self.in_flight, self.memory, self.gpu_memory):
                gauge.labels(*labels).set(0)
        self._shown = shown
        self.models_loaded.set(len(ready))
        self.generation.refresh(ready)
        self._refresh_pools()

    def _refresh_pools(self) -> None:
        """Set the pools' gauges, summed by name, and add the waits counted since the last refresh."""
        totals: dict[str, list[int]] = {}
        for watch, reading in pools.readings().items():
            figures = totals.setdefault(reading.name, [0, 0, 0])
            for index, value in enumerate((reading.size, reading.checked_out, reading.overflow)):
                figures[index] += value
            waits, seconds = self._pool_counts.get(watch, (0, 0.0))
            if reading.waits > waits:
                self.db_pool_waits.labels(reading.name).inc(reading.waits - waits)
                self.db_pool_wait_seconds.labels(reading.name).inc(reading.wait_seconds - seconds)
            self._pool_counts[watch] = reading.waits, reading.wait_seconds
        for name in self._pool_names - totals.keys():  # engines dropped since: nothing open any more
            totals[name] = [0, 0, 0]
        for name, (size, checked_out, overflow) in totals.items():
            self.db_pool_size.labels(name).set(size)
            self.db_pool_checked_out.labels(name).set(checked_out)
            self.db_pool_overflow.labels(name).set(overflow)
        self._pool_names = set(totals)

    def observe_memory(self, rss: int, pressure: int) -> None:
        """Set the process's resident memory and where it stands against the limits."""
        self.memory_rss.set(rss)
        self.memory_pressure.set(pressure)

    def observe_history_dropped(self, buckets: int) -> None:
        """Count traffic-history buckets dropped while the database could not be written."""
        self.history_dropped.inc(buckets)

    def observe_access_log_dropped(self, lines: int) -> None:
        """Count access log lines dropped unwritten."""
        self.access_log_dropped.inc(lines)

    def exposition(self) -> bytes:
        """The text a scrape receives: this process's registry, or every worker's values combined."""
        if (directory := multiprocess_dir()) is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=directory)  # type: ignore[no-untyped-call]
        if self._gpu.available:
            combined.register(self._gpu)
        return generate_latest(combined)


def request_status(code: int | str) -> str:
    """The seeds' ``status`` of an answered request: ``success`` for HTTP 200 or gRPC OK, else ``error``."""
    return "success" if code in (200, "OK") else "error"

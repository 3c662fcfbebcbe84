"""Replication's Prometheus metrics: state read from the jobs table at each scrape, events counted as they happen.

Lag, queue depth, jobs by state, bytes copied and mismatches are read from the jobs table when
Prometheus scrapes, so every replicator process, and a one-off ``--replicate`` run, agree on them; a
replicator that restarts loses none. Retries and failed attempts by reason are counted in the process
that sees them, as the server counts its requests.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from modelserve.observability.pools import PoolCollector
from modelserve.regions.jobs import JobStore
from modelserve.regions.schema import ACTIVE, State

LAG_KEPT_S = 86_400  # how long a replicated version's lag (0) is still exported


class ReplicationMetrics:
    """The replicator's metrics on ``registry``."""

    def __init__(self, registry: CollectorRegistry, jobs: JobStore, clock: Callable[[], float] = time.time) -> None:
        self.retries = Counter(
            "model_serving_replication_retries",
            "S3 calls of replication tried again, by target region and reason (throttled, server_error, "
            "connection, timeout, cut_download, corrupt).",
            ["region", "reason"],
            registry=registry,
        )
        self.failures = Counter(
            "model_serving_replication_failures",
            "Replication job attempts that failed, by target region and reason (the retry reasons, and "
            "mismatch, denied, missing, invalid, other).",
            ["region", "reason"],
            registry=registry,
        )
        registry.register(JobsCollector(jobs, clock))
        registry.register(PoolCollector())  # the jobs' engine's connection pool, as model servers export theirs

    def retried(self, region: str, reason: str) -> None:
        """Count one S3 call tried again."""
        self.retries.labels(region, reason).inc()

    def failed(self, region: str, reason: str) -> None:
        """Count one failed job attempt."""
        self.failures.labels(region, reason).inc()


class JobsCollector(Collector):
    """Reads the jobs table at each scrape."""

    def __init__(self, jobs: JobStore, clock: Callable[[], float]) -> None:
        self.jobs = jobs
        self.clock = clock

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry need not scrape the database when the collector is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families, from one read of the table."""
        up = GaugeMetricFamily(
            "model_serving_replication_database_up", "1 when the replication jobs' table could be read."
        )
        try:
            jobs = self.jobs.summary()
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self.clock()
        lag = GaugeMetricFamily(
            "model_serving_replication_lag_seconds",
            "How long a model version published in its source region has been missing from this region (0 once "
            "replicated).",
            labels=["model", "version", "region"],
        )
        states: dict[tuple[str, str], int] = defaultdict(int)
        queue: dict[str, int] = defaultdict(int)
        copied: dict[tuple[str, str], int] = defaultdict(int)
        mismatches: dict[str, int] = defaultdict(int)
        for job in jobs:
            # A version replicated more than a day ago is not worth a series of zeros forever.
            if job.state != State.REPLICATED or (job.finished_at or now) > now - LAG_KEPT_S:
                lag.add_metric([job.model, job.version, job.target_region], job.lag_s(now))
            states[job.target_region, job.state] += 1
            queue[job.target_region] += job.state in ACTIVE
            copied[job.source_region, job.target_region] += job.bytes_copied
            mismatches[job.target_region] += job.mismatches
        yield lag
        by_state = GaugeMetricFamily(
            "model_serving_replication_jobs", "Replication jobs by target region and state.", labels=["region", "state"]
        )
        for region in sorted({r for r, _ in states}):
            for state in State:
                by_state.add_metric([region, state.value], states.get((region, state.value), 0))
        yield by_state
        depth = GaugeMetricFamily(
            "model_serving_replication_queue_depth",
            "Replication jobs waiting or running (pending, copying, publishing), by target region.",
            labels=["region"],
        )
        for region, count in sorted(queue.items()):
            depth.add_metric([region], count)
        yield depth
        total = CounterMetricFamily(
            "model_serving_replication_bytes_copied",
            "Bytes written to a target region's store by replication, re-copies included.",
            labels=["source", "region"],
        )
        for (source, region), count in sorted(copied.items()):
            total.add_metric([source, region], count)
        yield total
        bad = CounterMetricFamily(
            "model_serving_replication_verify_mismatches",
            "Files whose copy in a region differed from the source's SHA256SUMS (caught while copying, and "
            "re-copied, or found by --verify-checksum).",
            labels=["region"],
        )
        for region, count in sorted(mismatches.items()):
            bad.add_metric([region], count)
        yield bad

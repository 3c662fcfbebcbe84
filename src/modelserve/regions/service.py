"""What the commands share: opening the regions file and the jobs' database, running jobs with progress
bars, and the replication service (``modelserve regions serve``): a loop that enqueues every version its
source region publishes for every other region and runs the jobs, beside an HTTP endpoint serving
``/metrics`` (Prometheus), ``/jobs`` (the jobs, as ``--list-pending --json`` prints them) and ``/health``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from sqlalchemy import Engine

from modelserve.regions.config import RegionsFile, load_regions
from modelserve.regions.jobs import JobStore, migrate
from modelserve.regions.metrics import ReplicationMetrics
from modelserve.regions.outcomes import ReplicationError
from modelserve.regions.replicator import Replicator
from modelserve.regions.schema import ReplicationJob, State

log = logging.getLogger("modelserve.regions")

__all__ = [
    "Context",
    "ReplicationError",
    "job_json",
    "open_context",
    "run_service",
    "run_with_progress",
    "split_model_id",
]


@dataclass
class Context:
    """The regions, the jobs' store and a replicator over both, for one command."""

    regions: RegionsFile
    engine: Engine
    jobs: JobStore
    replicator: Replicator
    registry: CollectorRegistry
    metrics: ReplicationMetrics
    clock: Callable[[], float] = time.time


def split_model_id(model_id: str) -> tuple[str, str | None]:
    """``name`` or ``name:version`` (the runbook's ``model-v1.0.0`` is a model's name)."""
    name, _, version = model_id.partition(":")
    return name, version or None


def open_context(regions_file: Path | None, database_url: str | None, owner: str) -> Context:
    """Everything a command needs; a ValueError says what is missing or wrong."""
    from modelserve.config import Settings
    from modelserve.db import open_engine

    settings = Settings()
    regions_file = regions_file or settings.regions_file
    if regions_file is None:
        raise ValueError("no regions file: pass --regions-file PATH or set REGIONS_FILE (docs/REGIONS.md)")
    regions = load_regions(regions_file)
    url = database_url or settings.history_database_url
    engine = open_engine(url, "replication", pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow)
    migrate(engine)
    jobs = JobStore(engine)
    registry = CollectorRegistry()
    metrics = ReplicationMetrics(registry, jobs)

    def copied(job: ReplicationJob, nbytes: int) -> None:
        _record_transfer(engine, job, nbytes)

    replicator = Replicator(
        regions, jobs, owner=owner, on_retry=metrics.retried, on_failure=metrics.failed, on_copied=copied
    )
    return Context(regions, engine, jobs, replicator, registry, metrics)


def _record_transfer(engine: Engine, job: ReplicationJob, nbytes: int) -> None:
    """Bytes that crossed regions, into the usage the cost report prices (regions/usage.py)."""
    from modelserve.regions.usage import record_transfer

    record_transfer(engine, job.model, job.version, job.source_region, job.target_region, nbytes)


def run_with_progress(context: Context, ids: list[int], console: Console) -> list[ReplicationJob]:
    """Run jobs ``ids`` here until each is replicated or dead, with a progress bar each; their final rows."""
    done = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            while not done.is_set():
                ran = context.replicator.run_pending(ids=ids)  # these jobs, not the whole queue
                states = {j.id: j.state for j in context.jobs.jobs() if j.id in ids}
                if all(s in (State.REPLICATED, State.DEAD) for s in states.values()):
                    return
                if not ran:  # jobs waiting for their next attempt, or leased by a service elsewhere
                    done.wait(0.5)
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=work, name="replication", daemon=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        tasks: dict[int, Any] = {}
        thread.start()
        while True:
            finished = done.wait(0.25)
            for job in _of(context.jobs.jobs(), ids):
                if job.id not in tasks:
                    label = f"{job.model}:{job.version} → {job.target_region}"
                    tasks[job.id] = progress.add_task(label, total=job.bytes_total, state=job.state)
                progress.update(tasks[job.id], completed=min(job.bytes_done, job.bytes_total), state=job.state)
            if finished:
                break
    thread.join()
    if failure:
        raise failure[0]
    return list(_of(context.jobs.jobs(), ids))


def _of(jobs: Iterable[ReplicationJob], ids: list[int]) -> Iterable[ReplicationJob]:
    wanted = set(ids)
    return (job for job in jobs if job.id in wanted)


def discover(context: Context, source: str) -> int:
    """Enqueue a job for every version ``source`` publishes and some other region lacks; how many are new."""
    origin = context.regions.region(source)
    store = context.replicator.store(origin)
    root = f"{origin.store.prefix}/" if origin.store.prefix else ""
    models: list[str] = []
    token: dict[str, str] = {}
    while True:
        answer = store.call(store.client.list_objects_v2, Bucket=store.bucket, Prefix=root, Delimiter="/", **token)
        models += [str(p["Prefix"]).rstrip("/").rsplit("/", 1)[-1] for p in answer.get("CommonPrefixes", [])]
        if not answer.get("IsTruncated"):
            break
        token = {"ContinuationToken": answer["NextContinuationToken"]}
    known = {(j.model, j.version, j.target_region) for j in context.jobs.jobs()}
    targets = [n for n in context.regions.names if n != source]
    added = 0
    for model in models:
        sums = context.replicator.manifest(origin, model)
        versions = sorted({p.split("/", 1)[0] for p in sums if "/" in p})
        for version in versions:
            missing = [t for t in targets if (model, version, t) not in known]
            if missing:
                try:
                    context.replicator.plan(model, version, source, missing)
                except ReplicationError:
                    continue  # listed but not all stored yet: a publication under way; seen next round
                added += len(missing)
    return added


def run_service(context: Context, source: str, interval: float, host: str, port: int) -> None:
    """Discover and replicate until interrupted, serving /metrics and /jobs on ``host:port`` (0: none).

    Logs go where the servers' go (LOG_LEVEL, LOG_FORMAT: JSON lines by default), one line per job
    replicated, per failed attempt with its next try, per job dead-lettered.
    """
    from modelserve.config import Settings
    from modelserve.observability.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    server = _serve_http(context, host, port) if port else None
    stop = threading.Event()
    log.info("replicating from %s every %g s; /metrics and /jobs on %s:%d", source, interval, host, port)
    try:
        while not stop.is_set():
            try:
                added = discover(context, source)
                if added:
                    log.info("%d new replication job(s)", added)
                context.replicator.run_pending(deadline=time.monotonic() + interval * 10)
            except Exception as exc:  # a store or the database out for a while: the next round tries again
                log.error("replication round failed: %s: %s", type(exc).__name__, exc)
            stop.wait(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a line each."""


def _serve_http(context: Context, host: str, port: int) -> WSGIServer:
    metrics_app = make_wsgi_app(context.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if environ.get("PATH_INFO") == "/jobs":
            now = context.clock()
            body = json.dumps([job_json(j, now) for j in context.jobs.jobs()]).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    server = make_server(host, port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="replication-http", daemon=True).start()
    return server


def job_json(job: ReplicationJob, now: float) -> dict[str, Any]:
    """A job as ``status --json``, ``pending --json`` and ``/jobs`` show it."""
    return {
        "model": job.model,
        "version": job.version,
        "source_region": job.source_region,
        "target_region": job.target_region,
        "state": job.state,
        "files_done": job.files_done,
        "files_total": job.files_total,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "bytes_copied": job.bytes_copied,
        "attempts": job.attempts,
        "retries": job.retries,
        "mismatches": job.mismatches,
        "lag_seconds": round(job.lag_s(now), 3),
        "next_attempt_at": job.next_attempt_at,
        "last_error": job.last_error,
        "last_reason": job.last_reason,
    }

"""The replication jobs' store on SQLite and a real PostgreSQL: migrations, enqueueing, leases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, inspect

from modelserve.db import open_engine
from modelserve.regions.jobs import JobStore, migrate
from modelserve.regions.metrics import ReplicationMetrics
from modelserve.regions.schema import VERSION_TABLE, Base, State

DAY = 86_400.0


@pytest.fixture
def jobs(database_url: str) -> Iterator[JobStore]:
    engine = open_engine(database_url)
    migrate(engine)
    yield JobStore(engine)
    engine.dispose()


def enqueue(jobs: JobStore, version: str = "1", now: float = 1000.0, again: bool = False) -> int:
    job = jobs.enqueue(
        "m", version, "us-east-1", "eu-west-1", published_at=900.0, files_total=2, bytes_total=10, now=now, again=again
    )
    return job.id


def test_migrations_build_the_schema_of_the_models_and_run_twice(jobs: JobStore) -> None:
    engine: Engine = jobs.engine
    assert {"replication_jobs", VERSION_TABLE} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == [], "the migrations and schema.py disagree"
    migrate(engine)


def test_a_job_is_enqueued_once_and_run_again_only_when_asked(jobs: JobStore) -> None:
    first = enqueue(jobs)
    assert enqueue(jobs) == first
    job = jobs.claim("a", 1000.0, 60.0, 10)[0]
    jobs.release(job, "a", 1001.0, state=State.DEAD, last_error="boom")
    assert enqueue(jobs) == first
    assert jobs.jobs("m")[0].state == State.DEAD
    enqueue(jobs, now=2000.0, again=True)
    again = jobs.jobs("m")[0]
    assert (again.state, again.attempts, again.published_at) == (State.PENDING, 0, 900.0)


def test_a_lease_keeps_a_job_to_its_owner_until_it_runs_out(jobs: JobStore) -> None:
    enqueue(jobs)
    job = jobs.claim("a", 1000.0, 60.0, 10)[0]
    assert jobs.claim("b", 1010.0, 60.0, 10) == []
    assert jobs.save(job, "a", 1020.0, 60.0, state=State.COPYING)  # renewed to 1080
    assert jobs.claim("b", 1070.0, 60.0, 10) == []
    taken = jobs.claim("b", 1081.0, 60.0, 10)
    assert [j.id for j in taken] == [job.id]
    assert not jobs.save(job, "a", 1082.0, 60.0, files_done=1), "the first owner lost it"
    assert jobs.jobs("m")[0].lease_owner == "b"


def test_counts_and_the_queue(jobs: JobStore) -> None:
    enqueue(jobs, "1")
    enqueue(jobs, "2")
    job = jobs.claim("a", 1000.0, 60.0, 1)[0]
    jobs.release(job, "a", 1001.0, state=State.REPLICATED)
    assert jobs.counts() == {"pending": 1, "copying": 0, "publishing": 0, "replicated": 1, "dead": 0}
    assert [j.version for j in jobs.active()] == ["2"]


def test_the_metrics_are_read_from_the_table_at_each_scrape(jobs: JobStore) -> None:
    enqueue(jobs, "1")  # published at 900
    enqueue(jobs, "2")
    enqueue(jobs, "3")
    old, recent, _ = jobs.claim("a", 1000.0, 60.0, 3)
    jobs.release(old, "a", 1000.0, state=State.REPLICATED, finished_at=1000.0, bytes_copied=10)
    jobs.release(recent, "a", 1000.0 + DAY, state=State.REPLICATED, finished_at=1000.0 + DAY, bytes_copied=10)
    registry = CollectorRegistry()
    ReplicationMetrics(registry, jobs, clock=lambda: 1000.0 + DAY + 60)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"region": "eu-west-1", **labels})

    assert value("model_serving_replication_lag_seconds", model="m", version="3") == DAY + 60 + 100
    assert value("model_serving_replication_lag_seconds", model="m", version="2") == 0.0
    assert value("model_serving_replication_lag_seconds", model="m", version="1") is None, "replicated a day ago"
    assert value("model_serving_replication_queue_depth") == 1
    assert value("model_serving_replication_jobs", state="replicated") == 2
    assert value("model_serving_replication_bytes_copied_total", source="us-east-1") == 20

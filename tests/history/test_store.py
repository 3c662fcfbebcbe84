"""Writing the traffic history, on SQLite and on a real PostgreSQL: migrations, batches, shutdown, retention."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select

from modelserve.db import open_engine
from modelserve.errors import Outcome
from modelserve.history import store
from modelserve.history.flusher import HistoryFlusher
from modelserve.history.recorder import TrafficRecorder
from modelserve.history.schema import VERSION_TABLE, Base, TrafficBucket
from tests.clock import Clock

START = 16_667 * 60  # a bucket start, for recorders whose clock the test sets
HEAD = "0002"  # the newest migration


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def rows(engine: Engine) -> list[TrafficBucket]:
    with engine.connect() as connection:
        return [
            TrafficBucket(**row._mapping)
            for row in connection.execute(select(TrafficBucket.__table__).order_by(TrafficBucket.bucket_start))
        ]


def test_migrations_build_the_schema_of_the_models_from_an_empty_database(engine: Engine) -> None:
    assert store.revision(engine) is None
    store.migrate(engine)
    assert store.revision(engine) == HEAD
    assert {"traffic_buckets", "usage_buckets", VERSION_TABLE} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}), Base.metadata
        )
    assert differences == [], "the migrations and schema.py disagree: add a migration"
    store.migrate(engine)  # at head already: nothing to do, nothing fails
    assert store.revision(engine) == HEAD


def test_servers_starting_together_migrate_once(database_url: str) -> None:
    engines = [open_engine(database_url) for _ in range(4)]
    failures: list[BaseException] = []

    def migrate(engine: Engine) -> None:
        try:
            store.migrate(engine)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=migrate, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert store.revision(engines[0]) == HEAD
    for engine in engines:
        engine.dispose()


def test_a_flush_writes_every_bucket_in_one_batch_and_later_flushes_add_up(database_url: str) -> None:
    clock = Clock(START + 1.0)
    recorder = TrafficRecorder(60, clock)
    flusher = HistoryFlusher(recorder, database_url, interval_s=3600, retention_s=0)
    for _ in range(5):
        recorder.record("mlp", "1", 0.002)
    recorder.record("mlp", "1", 0.5, outcome=Outcome.NOT_READY)
    recorder.record("iris", "1", 0.0005)
    clock.now += 60
    recorder.record("mlp", "1", 0.002)
    assert flusher.flush()
    assert recorder.pending() == 0
    written = rows(flusher.engine)
    assert sorted((r.model, r.bucket_start, r.requests) for r in written) == [
        ("iris", START, 1),
        ("mlp", START, 6),
        ("mlp", START + 60, 1),
    ]
    first = next(r for r in written if (r.model, r.bucket_start) == ("mlp", START))
    assert (first.ok, first.not_ready, first.failed) == (5, 1, 0)
    assert (first.latency_le_3ms, first.latency_le_1s) == (5, 1)
    assert first.latency_sum_s == pytest.approx(0.51)
    assert first.bucket_seconds == 60
    # The same bucket again (a later flush, or another worker): the counts add up.
    recorder.record("mlp", "1", 0.002)
    clock.now = START + 2.0
    recorder.record("mlp", "1", 0.002)
    assert flusher.flush()
    again = {(r.model, r.bucket_start): r.requests for r in rows(flusher.engine)}
    assert again == {("iris", START): 1, ("mlp", START): 7, ("mlp", START + 60): 2}
    flusher.close()


def test_nothing_is_written_until_a_flush(database_url: str) -> None:
    recorder = TrafficRecorder(60)
    flusher = HistoryFlusher(recorder, database_url, interval_s=3600, retention_s=0)
    assert flusher.flush()  # migrates; nothing to write yet
    for _ in range(100):
        recorder.record("mlp", "1", 0.002)
    with flusher.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(TrafficBucket)) == 0
    assert recorder.pending() == 1
    assert flusher.flush()
    assert sum(r.requests for r in rows(flusher.engine)) == 100
    flusher.close()


def test_the_thread_writes_every_interval(database_url: str) -> None:
    recorder = TrafficRecorder(60)
    flusher = HistoryFlusher(recorder, database_url, interval_s=0.05, retention_s=0)
    flusher.start()
    recorder.record("mlp", "1", 0.002)
    deadline = time.monotonic() + 30
    while recorder.pending() or not _written(flusher):
        assert time.monotonic() < deadline, "the flusher never wrote"
        time.sleep(0.02)
    flusher.close()
    engine = open_engine(database_url)
    assert sum(r.requests for r in rows(engine)) == 1
    engine.dispose()


def _written(flusher: HistoryFlusher) -> bool:
    try:
        return bool(rows(flusher.engine))
    except Exception:  # the table may not exist yet
        return False


def test_closing_writes_what_was_recorded_since_the_last_flush(database_url: str) -> None:
    recorder = TrafficRecorder(60)
    flusher = HistoryFlusher(recorder, database_url, interval_s=3600, retention_s=0)
    flusher.start()  # its first write is an hour away: only closing can write these
    for _ in range(250):
        recorder.record("mlp", "1", 0.002)
    recorder.record("iris", "1", 0.002, outcome=Outcome.FAILED)
    flusher.close()
    engine = open_engine(database_url)
    written = {r.model: (r.requests, r.failed) for r in rows(engine)}
    engine.dispose()
    assert written == {"mlp": (250, 0), "iris": (1, 1)}


def test_a_database_that_cannot_be_reached_keeps_the_buckets_for_later(tmp_path: pytest.TempPathFactory) -> None:
    recorder = TrafficRecorder(60)
    unreachable = "postgresql+psycopg://nobody:secret-password@127.0.0.1:1/none"
    flusher = HistoryFlusher(recorder, unreachable, interval_s=3600, retention_s=0)
    recorder.record("mlp", "1", 0.002)
    assert not flusher.flush()
    recorder.record("mlp", "1", 0.002)
    assert recorder.pending() == 1
    (bucket,) = recorder.take().values()
    assert bucket.counts[0] == 2, "the failed batch came back and the next request added to it"


def test_a_database_that_cannot_be_reached_is_logged_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    flusher = HistoryFlusher(
        TrafficRecorder(60), "postgresql+psycopg://nobody:secret-password@127.0.0.1:1/none", 3600, 0
    )
    with caplog.at_level("INFO", logger="modelserve.history"):
        assert not flusher.flush()
        assert not flusher.flush()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, "one error per outage, not one per attempt"
    assert "cannot write to postgresql+psycopg://nobody:***@127.0.0.1:1/none" in messages[0]
    assert "secret-password" not in caplog.text


def test_buckets_older_than_the_retention_are_deleted(database_url: str) -> None:
    clock = Clock(time.time() - 3 * 86_400)
    recorder = TrafficRecorder(60, clock)
    recorder.record("mlp", "1", 0.002)  # three days ago
    clock.now = time.time() - 3600
    recorder.record("mlp", "1", 0.002)  # an hour ago
    flusher = HistoryFlusher(recorder, database_url, interval_s=3600, retention_s=2 * 86_400)
    assert flusher.flush()
    kept = rows(flusher.engine)
    assert len(kept) == 1
    assert kept[0].bucket_start > time.time() - 2 * 86_400
    flusher.close()

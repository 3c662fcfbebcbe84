"""Usage rows on SQLite and a real PostgreSQL: transfers recorded by the replicator's call, rows that add
up across writes, and the per-day totals a cost report reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from modelserve.db import open_engine
from modelserve.history import store
from modelserve.history.flusher import HistoryFlusher
from modelserve.history.recorder import TrafficRecorder
from modelserve.history.schema import USAGE_TABLE, Base, TrafficBucket
from modelserve.regions import usage_store
from modelserve.regions.usage import NETWORK, USAGE_BUCKET_S, Usage, UsageRecorder, record_transfer
from tests.clock import Clock

DAY = 86_400
UNTIL = 20_000 * DAY  # a day boundary
USAGE = Base.metadata.tables[USAGE_TABLE]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def test_transfers_add_up_per_hour_and_land_on_the_source_region(engine: Engine) -> None:
    at = UNTIL - 2 * USAGE_BUCKET_S + 5
    record_transfer(engine, "resnet", "3", "us-east-1", "eu-west-1", 1_000, at=at)  # migrates first
    record_transfer(engine, "resnet", "3", "us-east-1", "eu-west-1", 234, at=at + 60)
    record_transfer(engine, "resnet", "3", "us-east-1", "ap-south-1", 7, at=at)

    (rows,) = usage_store.by_day(engine, UNTIL - DAY, UNTIL).values()

    found = {(row.region, row.peer_region, row.device): row.usage.transfer_bytes for row in rows}
    assert found == {("us-east-1", "eu-west-1", NETWORK): 1_234, ("us-east-1", "ap-south-1", NETWORK): 7}


def test_a_transfer_must_cross_regions_and_move_bytes(engine: Engine) -> None:
    with pytest.raises(ValueError, match="within us-east-1"):
        record_transfer(engine, "resnet", "3", "us-east-1", "us-east-1", 10)
    with pytest.raises(ValueError, match="negative"):
        record_transfer(engine, "resnet", "3", "us-east-1", "eu-west-1", -1)


def test_writes_add_up_and_days_count_back_from_the_end_of_the_window(engine: Engine) -> None:
    store.migrate(engine)
    last_hour = UNTIL - USAGE_BUCKET_S
    key = ("mlp", "1", "local", "cpu", "")
    usage_store.write(engine, {(*key, last_hour): Usage(requests=3, inferences=5, compute_seconds=0.25)})
    usage_store.write(engine, {(*key, last_hour): Usage(requests=2, inferences=2, compute_seconds=0.5, tokens=9)})
    usage_store.write(engine, {(*key, UNTIL - DAY): Usage(requests=1, memory_byte_seconds=1e12)})  # day 0's first hour
    usage_store.write(engine, {(*key, UNTIL - DAY - USAGE_BUCKET_S): Usage(requests=10)})  # day 1's last
    usage_store.write(engine, {(*key, UNTIL): Usage(requests=100)})  # after the window

    days = usage_store.by_day(engine, UNTIL - 2 * DAY, UNTIL)

    assert sorted(days) == [0, 1]
    (today,) = days[0]
    assert today.usage == Usage(
        requests=6, inferences=7, compute_seconds=0.75, memory_byte_seconds=1e12, tokens=9, transfer_bytes=0
    )
    assert [row.usage.requests for row in days[1]] == [10]
    assert usage_store.by_day(engine, UNTIL - DAY, UNTIL).keys() == {0}


def test_usage_a_flush_cannot_write_waits_for_the_next_and_the_traffic_is_written_once(database_url: str) -> None:
    traffic, usage = TrafficRecorder(60, Clock(UNTIL + 1.0)), UsageRecorder()
    flusher = HistoryFlusher(traffic, database_url, interval_s=3600, retention_s=0, companions=[usage])
    key = ("mlp", "1", "local", "cpu", "", UNTIL)
    assert flusher.flush()  # migrated: both tables exist
    with flusher.engine.begin() as connection:
        USAGE.drop(connection)  # the usage write fails from now on, the traffic one does not

    traffic.record("mlp", "1", 0.001)
    usage.add(key, Usage(requests=1, compute_seconds=0.5))
    assert not flusher.flush()
    with flusher.engine.begin() as connection:
        USAGE.create(connection)
    usage.add(key, Usage(requests=2))
    assert flusher.flush()

    (row,) = usage_store.by_day(flusher.engine, UNTIL, UNTIL + DAY)[0]
    assert (row.usage.requests, row.usage.compute_seconds) == (3, 0.5), "kept, then added to what came since"
    with flusher.engine.connect() as connection:
        assert connection.execute(select(func.sum(TrafficBucket.requests))).scalar_one() == 1, "written once"
    flusher.close()

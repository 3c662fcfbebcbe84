"""Connection-pool metrics of real engines, on SQLite and a real PostgreSQL: size, connections in use and
beyond the size, and the checkouts that waited, as a server's /metrics exports them."""

from __future__ import annotations

import gc
import itertools
from contextlib import ExitStack

import pytest
import sqlalchemy.exc
from prometheus_client import CollectorRegistry

from modelserve.db import open_engine
from modelserve.observability.metrics import Metrics
from modelserve.observability.pools import PoolCollector

# Each engine's pool gets a name of its own: another test's engine may outlive its test until collected.
_names = (f"pool-{n}" for n in itertools.count())


def sample(registry: CollectorRegistry, name: str, pool: str) -> float | None:
    return registry.get_sample_value(name, {"pool": pool})


def test_the_gauges_follow_connections_in_use_and_beyond_the_size(database_url: str) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    name = next(_names)
    engine = open_engine(database_url, name, pool_size=2, max_overflow=1)
    with ExitStack() as held:
        for _ in range(3):
            held.enter_context(engine.connect())
        metrics.refresh([])
        assert sample(registry, "model_serving_db_pool_size", name) == 2
        assert sample(registry, "model_serving_db_pool_checked_out", name) == 3
        assert sample(registry, "model_serving_db_pool_overflow", name) == 1
    metrics.refresh([])
    assert sample(registry, "model_serving_db_pool_checked_out", name) == 0
    assert sample(registry, "model_serving_db_pool_waits_total", name) is None, "nobody waited"
    engine.dispose()


def test_a_checkout_that_finds_the_pool_exhausted_is_counted_as_a_wait(database_url: str) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    name = next(_names)
    engine = open_engine(database_url, name, pool_size=1, max_overflow=0, pool_timeout_s=0.2)
    with engine.connect():
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()
        metrics.refresh([])
    assert sample(registry, "model_serving_db_pool_waits_total", name) == 1
    seconds = sample(registry, "model_serving_db_pool_wait_seconds_total", name)
    assert seconds is not None
    assert seconds >= 0.2

    engine.dispose()  # a new pool in the old one's place counts on into the same series
    with engine.connect(), pytest.raises(sqlalchemy.exc.TimeoutError):
        engine.connect()
    metrics.refresh([])
    assert sample(registry, "model_serving_db_pool_waits_total", name) == 2
    engine.dispose()


def test_a_dropped_engine_leaves_no_connection_behind_in_the_gauges(database_url: str) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    name = next(_names)
    engine = open_engine(database_url, name, pool_size=4)
    with engine.connect():
        metrics.refresh([])
    assert sample(registry, "model_serving_db_pool_size", name) == 4
    engine.dispose()
    del engine
    gc.collect()  # the pool class and its watch form a cycle with the engine's pool
    metrics.refresh([])
    assert sample(registry, "model_serving_db_pool_size", name) == 0


def test_a_process_without_a_model_server_exports_its_pools_through_the_collector(database_url: str) -> None:
    registry = CollectorRegistry()
    registry.register(PoolCollector())
    name = next(_names)
    engine = open_engine(database_url, name, pool_size=1, max_overflow=1, pool_timeout_s=0.1)
    with engine.connect(), engine.connect():
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()
        assert sample(registry, "model_serving_db_pool_checked_out", name) == 2
        assert sample(registry, "model_serving_db_pool_overflow", name) == 1
    assert sample(registry, "model_serving_db_pool_size", name) == 1
    assert sample(registry, "model_serving_db_pool_waits_total", name) == 1
    engine.dispose()

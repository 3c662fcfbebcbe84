"""SQLAlchemy engines for the stores that persist: SQLite by default, PostgreSQL when DATABASE_URL says so.

Both back-ends get the same guarantees the stores rely on: a transaction holds the write lock from its
first statement (so migrations and upserts of concurrent processes queue instead of failing), and a
server that cannot reach its database gives up on a connection within seconds rather than hanging.
Every engine's pool is watched (``observability/pools.py``): its size, connections in use and beyond
the size, and the checkouts that waited for one, exported as ``model_serving_db_pool_*``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from modelserve.observability import pools

CONNECT_TIMEOUT_S = 10
# SQLAlchemy's defaults, and DB_POOL_SIZE's and DB_MAX_OVERFLOW's.
POOL_SIZE = 5
MAX_OVERFLOW = 10
# How long a checkout waits for a busy pool before it fails (SQLAlchemy's default).
POOL_TIMEOUT_S = 30.0
# How long a SQLite writer waits for another process's transaction (workers share one file).
SQLITE_BUSY_TIMEOUT_S = 30


def resolve(url: str) -> URL:
    """The URL with the driver the project installs: ``postgresql://`` means psycopg 3, not psycopg2."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown(url: str | URL) -> str:
    """The URL as logs may show it: the password masked."""
    return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)


def open_engine(
    url: str,
    name: str = "database",
    *,
    pool_size: int = POOL_SIZE,
    max_overflow: int = MAX_OVERFLOW,
    pool_timeout_s: float = POOL_TIMEOUT_S,
) -> Engine:
    """An engine on ``url`` whose pool keeps ``pool_size`` connections and opens up to ``max_overflow``
    more when all are busy, beyond which a checkout waits up to ``pool_timeout_s``; ``name`` (what the
    engine is for: ``history``) labels its pool's metrics. A SQLite file's folder is created when missing."""
    parsed = resolve(url)
    sizes = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout_s}
    if parsed.get_backend_name() != "sqlite":
        return _watched(name, parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, **sizes)
    options: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = _watched(name, parsed, **options, **sizes)
    else:  # an in-memory database lives in one connection (SQLAlchemy's SingletonThreadPool): nothing to watch
        engine = create_engine(parsed, **options)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


# SQLAlchemy's pools log under their class's module, ours for a watched pool: keep their INFO lines (one
# at every dispose) at WARNING, where SQLAlchemy keeps its own loggers.
logging.getLogger(f"{__name__}.WatchedPool").setLevel(logging.WARNING)


class _WatchedPool(QueuePool):
    """A QueuePool that counts the checkouts that found every connection busy and no room to open
    another, and how long they waited. Each engine gets a subclass holding its watch, so the pool
    ``Engine.dispose`` puts in its place (``recreate`` builds one of the same class) counts on."""

    watch: pools.PoolWatch

    def __init__(self, creator: Any, pool_size: int = POOL_SIZE, max_overflow: int = MAX_OVERFLOW, **kw: Any) -> None:
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)
        self.limit = pool_size + max_overflow

    def _do_get(self) -> ConnectionPoolEntry:
        # The method QueuePool's subclasses override to hand out connections.
        if self.checkedout() < self.limit:
            return super()._do_get()
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:  # a checkout that gave up (pool timeout) waited too
            self.watch.waited(time.perf_counter() - started)


def _watched(name: str, url: URL, **options: Any) -> Engine:
    """An engine whose pool ``observability.pools`` lists, read through a weak reference so that the
    listing keeps no dropped engine alive."""

    class WatchedPool(_WatchedPool):
        pass

    engine = create_engine(url, poolclass=WatchedPool, **options)
    reference = weakref.ref(engine)

    def gauges() -> tuple[int, int, int] | None:
        if (alive := reference()) is None:
            return None
        pool = alive.pool
        assert isinstance(pool, QueuePool)
        return pool.size(), pool.checkedout(), max(0, pool.overflow())

    WatchedPool.watch = pools.watch(name, gauges)
    return engine


def _sqlite_connect(dbapi_connection: Any, _: object) -> None:
    # pysqlite opens transactions itself, late, and commits before DDL; take that over (SQLAlchemy's
    # documented recipe) so that BEGIN comes from _sqlite_begin. WAL lets readers run beside a writer.
    dbapi_connection.isolation_level = None
    # In WAL mode NORMAL syncs at checkpoints instead of at every commit: SQLite's advice for WAL, safe
    # from corruption; a power cut (not a crash of the process) may lose the last commits. A replication
    # job records its progress at every file: a sync each time was a fifth of a job's wall time.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL").close()
    # Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once rather than
    # calling its busy handler: servers opening one file together retry until the first has switched it.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL").close()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE: the write lock is taken now, so two processes' read-then-write transactions cannot deadlock.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: Engine, script_location: str, lock_key: int, metadata: MetaData, version_table: str) -> None:
    """Bring a store's tables to the newest revision of its Alembic chain (``upgrade head``); concurrent
    callers take turns.

    The whole upgrade is one transaction under a lock (PostgreSQL's advisory lock ``lock_key``; SQLite's
    write lock, taken by BEGIN IMMEDIATE), so the second of two servers starting together finds the
    work done. There is no alembic.ini and no offline (SQL script) mode: each chain's env.py is
    ``run_migrations``, on the connection opened and locked here.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("path_separator", "os")
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        config.attributes.update(connection=connection, metadata=metadata, version_table=version_table)
        command.upgrade(config, "head")


def run_migrations() -> None:
    """The body of every chain's env.py: migrate on what ``upgrade`` handed over. Batch mode lets later
    migrations alter columns on SQLite, which has almost no ALTER TABLE."""
    from alembic import context

    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"],
        target_metadata=attributes["metadata"],
        version_table=attributes["version_table"],
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()

"""SQLAlchemy engines for the stores that persist: SQLite by default, PostgreSQL when DATABASE_URL says so.

Both back-ends get the same guarantees the stores rely on: a transaction holds the write lock from its
first statement (so migrations and upserts of concurrent processes queue instead of failing), and a
server that cannot reach its database gives up on a connection within seconds rather than hanging.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

CONNECT_TIMEOUT_S = 10
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


def open_engine(url: str) -> Engine:
    """An engine on ``url``; a SQLite file's folder is created when missing."""
    parsed = resolve(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _: object) -> None:
    # pysqlite opens transactions itself, late, and commits before DDL; take that over (SQLAlchemy's
    # documented recipe) so that BEGIN comes from _sqlite_begin. WAL lets readers run beside a writer.
    dbapi_connection.isolation_level = None
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

"""Writing the traffic history: the schema brought to the newest revision, buckets added, old ones deleted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, delete, inspect, text
from sqlalchemy.dialects import postgresql, sqlite

from modelserve.db import upgrade
from modelserve.history.recorder import Bucket, BucketKey
from modelserve.history.schema import COUNTERS, LATENCY_COLUMNS, OUTCOMES, VERSION_TABLE, Base, TrafficBucket

# pg_advisory_xact_lock key that serialises migrations of concurrent starters ("modelsrv" in ASCII).
_MIGRATION_LOCK = 0x6D6F64656C737276


def migrate(engine: Engine) -> None:
    """Bring the traffic history's tables to the newest revision; concurrent callers take turns (db.upgrade)."""
    upgrade(engine, "modelserve.history:migrations", _MIGRATION_LOCK, Base.metadata, VERSION_TABLE)


def revision(engine: Engine) -> str | None:
    """The schema revision the database is at; None before the first migration."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one_or_none()


def write(engine: Engine, buckets: Mapping[BucketKey, Bucket], bucket_s: int) -> None:
    """Add ``buckets`` to their rows in one transaction, creating the rows that do not exist yet."""
    if not buckets:
        return
    rows = [_row(key, bucket, bucket_s) for key, bucket in buckets.items()]
    with engine.begin() as connection:
        connection.execute(_upsert(connection), rows)


def purge(engine: Engine, before: int) -> int:
    """Delete the buckets that started before ``before`` (epoch seconds); how many were deleted."""
    with engine.begin() as connection:
        result = connection.execute(delete(TrafficBucket).where(TrafficBucket.bucket_start < before))
        return int(result.rowcount)


def _row(key: BucketKey, bucket: Bucket, bucket_s: int) -> dict[str, Any]:
    model, version, start = key
    outcomes = bucket.counts[: len(OUTCOMES)]
    return {
        "model": model,
        "version": version,
        "bucket_start": start,
        "bucket_seconds": bucket_s,
        "requests": sum(outcomes),
        **dict(zip(OUTCOMES, outcomes, strict=True)),
        **dict(zip(LATENCY_COLUMNS, bucket.counts[len(OUTCOMES) :], strict=True)),
        "latency_sum_s": bucket.latency_sum_s,
    }


def _upsert(connection: Connection) -> Any:
    # INSERT ... ON CONFLICT DO UPDATE adding the counts: another process (a worker, a pod) or an earlier
    # flush may have written the same bucket. Both dialects spell it alike.
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(TrafficBucket)
    table = TrafficBucket.__table__
    added = {name: table.c[name] + statement.excluded[name] for name in (*COUNTERS, "latency_sum_s")}
    return statement.on_conflict_do_update(
        index_elements=["model", "version", "bucket_start"],
        set_={**added, "bucket_seconds": statement.excluded.bucket_seconds},
    )

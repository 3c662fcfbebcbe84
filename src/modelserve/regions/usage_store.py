"""Usage rows in the database: upserts that add up, and the totals a cost report reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from modelserve.history.schema import USAGE_COUNTERS, UsageBucket
from modelserve.regions.usage import USAGE_BUCKET_S, Usage, UsageKey

DAY_S = 86_400

_KEY = ("model", "version", "region", "device", "peer_region", "bucket_start")


def write(engine: Engine, rows: Mapping[UsageKey, Usage]) -> None:
    """Add ``rows`` to the database in one transaction, creating the rows that do not exist yet."""
    if not rows:
        return
    values = [_values(key, usage) for key, usage in rows.items()]
    with engine.begin() as connection:
        connection.execute(_upsert(connection), values)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What one model version used on one device in one region, over a window (summed buckets)."""

    model: str
    version: str
    region: str
    device: str
    peer_region: str
    usage: Usage


def by_day(engine: Engine, since: float, until: float) -> dict[int, list[UsageRow]]:
    """Usage of the buckets that start in ``[since, until)``, summed per version, region and device, by
    day: 0 holds the 24 hours before ``until``, 1 the 24 hours before those, and so on."""
    table = UsageBucket.__table__
    key_columns = [table.c[name] for name in _KEY[:-1]]
    day = ((int(until) - 1 - table.c.bucket_start) // DAY_S).label("day")
    query = (
        select(*key_columns, day, *(_sum(table.c[name]) for name in USAGE_COUNTERS))
        .where(table.c.bucket_start >= int(since), table.c.bucket_start < int(until))
        .group_by(*key_columns, day)
    )
    found: dict[int, list[UsageRow]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            values = row._mapping
            usage = Usage(**{name: values[name] or 0 for name in USAGE_COUNTERS})
            key = (values["model"], values["version"], values["region"], values["device"], values["peer_region"])
            found.setdefault(int(values["day"]), []).append(UsageRow(*key, usage))
    return found


def _sum(column: Any) -> Any:
    # PostgreSQL sums BIGINTs as NUMERIC (Decimal in Python): cast back to the column's own type.
    return func.sum(column).cast(column.type).label(column.name)


def _values(key: UsageKey, usage: Usage) -> dict[str, Any]:
    return {
        **dict(zip(_KEY, key, strict=True)),
        "bucket_seconds": USAGE_BUCKET_S,
        **{name: getattr(usage, name) for name in USAGE_COUNTERS},
    }


def _upsert(connection: Connection) -> Any:
    # As the traffic buckets: another process, pod or earlier flush may have written the same row.
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(UsageBucket)
    table = UsageBucket.__table__
    return statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={name: table.c[name] + statement.excluded[name] for name in USAGE_COUNTERS},
    )

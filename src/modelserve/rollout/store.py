"""The rollouts' store: migrations, and each model's newest rollout read and written.

Every change of a rollout is written before the server acts on it (a share moved, a version promoted
or rolled back), so a server that stops at any point resumes from what the table says.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from modelserve.db import upgrade
from modelserve.rollout.schema import TABLE, VERSION_TABLE, Base, Rollout

# pg_advisory_xact_lock key serialising the migrations of concurrent starters ("rollouts" in ASCII).
_MIGRATION_LOCK = 0x726F6C6C6F757473


def migrate(engine: Engine) -> None:
    """Bring the rollouts' table to the newest revision; concurrent callers take turns (as history.store.migrate)."""
    upgrade(engine, "modelserve.rollout:migrations", _MIGRATION_LOCK, Base.metadata, VERSION_TABLE)


class RolloutStore:
    """Rollouts on one database. The table is created by the first rollout started, not at every
    server's start: a server that never rolls out leaves the database as it found it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._migrated = False

    def latest(self) -> list[Rollout]:
        """The newest rollout of every model that has one; none before the table exists."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table(TABLE):
                return []
        newest = select(Rollout.model, func.max(Rollout.id).label("id")).group_by(Rollout.model).subquery()
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(Rollout).join(newest, Rollout.id == newest.c.id).order_by(Rollout.id)))

    def history(self, model: str, limit: int = 20) -> list[Rollout]:
        """The rollouts of ``model``, newest first."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table(TABLE):
                return []
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Rollout).where(Rollout.model == model).order_by(Rollout.id.desc()).limit(limit)
            return list(session.scalars(query))

    def save(self, rollout: Rollout) -> Rollout:
        """Write ``rollout`` (a new one gets its id); the object stays readable afterwards."""
        if not self._migrated:
            migrate(self.engine)
            self._migrated = True
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            merged = session.merge(rollout)
        if rollout.id is None:
            rollout.id = merged.id
        return merged

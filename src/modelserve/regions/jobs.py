"""The replication jobs' store: migrations, enqueueing, claiming with a lease, and recording progress.

Any number of replicator processes may share the table. A process claims a job by writing its name
and a lease expiry on it; a job whose lease ran out (its process stopped) is claimed again and resumes
from the progress stored on it. Every change is written before the work it describes goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from modelserve.db import upgrade
from modelserve.regions.schema import ACTIVE, VERSION_TABLE, Base, ReplicationJob, State

# pg_advisory_xact_lock key serialising the migrations of concurrent starters ("replicat" in ASCII).
_MIGRATION_LOCK = 0x7265706C69636174


def migrate(engine: Engine) -> None:
    """Bring the jobs' table to the newest revision; concurrent callers take turns (as history.store.migrate)."""
    upgrade(engine, "modelserve.regions:migrations", _MIGRATION_LOCK, Base.metadata, VERSION_TABLE)


class JobStore:
    """Replication jobs on one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def session(self) -> Session:
        """A session whose objects stay readable after commit."""
        return Session(self.engine, expire_on_commit=False)

    def enqueue(
        self,
        model: str,
        version: str,
        source: str,
        target: str,
        *,
        published_at: float,
        files_total: int,
        bytes_total: int,
        now: float,
        again: bool = False,
    ) -> ReplicationJob:
        """The job copying ``model:version`` into ``target``, created pending when new.

        An existing job is left as it is unless ``again`` asks to run it anew (a dead one, or a
        replicated one to re-check); its progress is kept, so files already verified are not copied twice.
        """
        for _ in range(2):  # a second process may insert the same job between our read and our insert
            try:
                with self.session() as session, session.begin():
                    job = session.scalars(
                        select(ReplicationJob).where(
                            ReplicationJob.model == model,
                            ReplicationJob.version == version,
                            ReplicationJob.target_region == target,
                        )
                    ).one_or_none()
                    if job is None:
                        job = ReplicationJob(
                            model=model,
                            version=version,
                            source_region=source,
                            target_region=target,
                            state=State.PENDING,
                            files_total=files_total,
                            files_done=0,
                            bytes_total=bytes_total,
                            bytes_done=0,
                            bytes_copied=0,
                            attempts=0,
                            retries=0,
                            mismatches=0,
                            published_at=published_at,
                            created_at=now,
                            updated_at=now,
                            next_attempt_at=now,
                            lease_until=0.0,
                            progress="{}",
                        )
                        session.add(job)
                    elif again and job.state in (State.DEAD, State.REPLICATED):
                        if job.state == State.REPLICATED:
                            job.published_at = now  # a re-check: the version was there, nothing lagged until now
                        job.state = State.PENDING
                        job.source_region = source
                        job.attempts = 0
                        job.files_total, job.bytes_total = files_total, bytes_total
                        job.next_attempt_at = now
                        job.updated_at = now
                        job.finished_at = None
                    return job
            except IntegrityError:
                continue
        raise RuntimeError(f"could not enqueue {model}:{version} → {target}")

    def claim(
        self, owner: str, now: float, lease_s: float, limit: int, ids: Sequence[int] | None = None
    ) -> list[ReplicationJob]:
        """Up to ``limit`` runnable jobs (due, and unleased or with their lease run out; among ``ids`` when
        given), leased to ``owner``."""
        with self.session() as session, session.begin():
            query = (
                select(ReplicationJob)
                .where(
                    ReplicationJob.state.in_([s.value for s in ACTIVE]),
                    ReplicationJob.next_attempt_at <= now,
                    or_(ReplicationJob.lease_owner.is_(None), ReplicationJob.lease_until < now),
                )
                .order_by(ReplicationJob.published_at, ReplicationJob.id)
                .limit(limit)
            )
            if ids is not None:
                query = query.where(ReplicationJob.id.in_(list(ids)))
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            jobs = list(session.scalars(query))
            for job in jobs:
                job.lease_owner, job.lease_until, job.updated_at = owner, now + lease_s, now
            return jobs

    def save(self, job: ReplicationJob, owner: str, now: float, lease_s: float, **changes: Any) -> bool:
        """Write ``changes`` (and renew the lease) if ``owner`` still holds the job; False when it lost it."""
        if "progress" in changes and not isinstance(changes["progress"], str):
            changes["progress"] = json.dumps(changes["progress"], sort_keys=True)
        values = {**changes, "updated_at": now, "lease_until": now + lease_s}
        with self.engine.begin() as connection:
            result = connection.execute(
                update(ReplicationJob)
                .where(and_(ReplicationJob.id == job.id, ReplicationJob.lease_owner == owner))
                .values(**values)
            )
        if result.rowcount != 1:
            return False
        for name, value in values.items():
            setattr(job, name, value)
        return True

    def count_retries(self, job_id: int, count: int) -> None:
        """Add ``count`` retried calls to a job, whoever holds it (retries happen on worker threads)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(ReplicationJob).where(ReplicationJob.id == job_id).values(retries=ReplicationJob.retries + count)
            )

    def note_mismatch(self, model: str, version: str, target: str, error: str, now: float) -> bool:
        """Count a copy found corrupt by a later check on its job; False when no job copied it."""
        with self.engine.begin() as connection:
            result = connection.execute(
                update(ReplicationJob)
                .where(
                    ReplicationJob.model == model,
                    ReplicationJob.version == version,
                    ReplicationJob.target_region == target,
                )
                .values(mismatches=ReplicationJob.mismatches + 1, last_error=error[:4000], updated_at=now)
            )
        return bool(result.rowcount)

    def release(self, job: ReplicationJob, owner: str, now: float, **changes: Any) -> None:
        """Write the job's outcome and give its lease up."""
        self.save(job, owner, now, 0.0, lease_owner=None, **changes)
        job.lease_owner = None

    def jobs(self, model: str | None = None, version: str | None = None) -> list[ReplicationJob]:
        """Jobs, oldest version first, of one model (and version) or all."""
        query = select(ReplicationJob).order_by(
            ReplicationJob.model, ReplicationJob.version, ReplicationJob.target_region
        )
        if model is not None:
            query = query.where(ReplicationJob.model == model)
        if version is not None:
            query = query.where(ReplicationJob.version == version)
        with self.session() as session:
            return list(session.scalars(query))

    def summary(self) -> list[ReplicationJob]:
        """Every job without its progress (which can be long): what the metrics read at each scrape."""
        with self.session() as session:
            return list(session.scalars(select(ReplicationJob).options(defer(ReplicationJob.progress))))

    def active(self) -> list[ReplicationJob]:
        """Jobs not yet replicated nor dead: the queue, oldest published first."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(ReplicationJob)
                    .where(ReplicationJob.state.in_([s.value for s in ACTIVE]))
                    .order_by(ReplicationJob.published_at, ReplicationJob.id)
                )
            )

    def counts(self) -> dict[str, int]:
        """Jobs by state, every state present."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(ReplicationJob.state, func.count()).group_by(ReplicationJob.state)).all()
        found = {str(state): int(count) for state, count in rows}
        return {state.value: found.get(state.value, 0) for state in State}


def progress_of(job: ReplicationJob) -> dict[str, dict[str, Any]]:
    """The job's per-file progress."""
    loaded: dict[str, dict[str, Any]] = json.loads(job.progress or "{}")
    return loaded


def pending_first(jobs: Sequence[ReplicationJob]) -> Iterator[ReplicationJob]:
    """Jobs ordered for an operator: dead first, then active by lag, then replicated."""
    order = {State.DEAD: 0, State.COPYING: 1, State.PUBLISHING: 1, State.PENDING: 2, State.REPLICATED: 3}
    yield from sorted(jobs, key=lambda j: (order[State(j.state)], j.published_at, j.id))

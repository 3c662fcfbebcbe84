"""The replication jobs' table: one row per (model version, target region), its state stored before it is acted on.

A job's ``progress`` is JSON holding, per file, whether it is copied and verified, and the multipart
upload in flight (its id and the parts completed with their ETags), so a replicator that stops
resumes from the last completed part. Changing this file means adding a migration that does the same.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Float, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TABLE = "replication_jobs"
VERSION_TABLE = "replication_jobs_version"


class State(StrEnum):
    """Where a job is. pending → copying → publishing → replicated; dead once its attempts are spent."""

    PENDING = "pending"  # waiting for its first or next attempt (next_attempt_at)
    COPYING = "copying"  # files are being copied and verified
    PUBLISHING = "publishing"  # every file verified; the target's SHA256SUMS is being written
    REPLICATED = "replicated"  # published in the target: servers there see the version
    DEAD = "dead"  # dead-lettered: attempts spent, or an error no retry mends (last_error says which)


ACTIVE = (State.PENDING, State.COPYING, State.PUBLISHING)


class Base(DeclarativeBase):
    """Declarative base with constraint names equal on every back-end, so migrations can name them."""

    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s_%(column_2_name)s",
        },
    )


class ReplicationJob(Base):
    """Copying one model version from its source region into one target region."""

    __tablename__ = TABLE
    __table_args__ = (UniqueConstraint("model", "version", "target_region"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    source_region: Mapped[str] = mapped_column(String(255))
    target_region: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), index=True)
    files_total: Mapped[int] = mapped_column(Integer)
    files_done: Mapped[int] = mapped_column(Integer)
    bytes_total: Mapped[int] = mapped_column(BigInteger)
    bytes_done: Mapped[int] = mapped_column(BigInteger)  # of verified files, and parts of the ones under way
    bytes_copied: Mapped[int] = mapped_column(BigInteger)  # every byte written to the target, re-copies included
    attempts: Mapped[int] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer)  # S3 calls tried again, all attempts together
    mismatches: Mapped[int] = mapped_column(Integer)  # files whose copy failed verification and was re-copied
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Epoch seconds. published_at: when the version appeared in its source, where replication lag starts.
    published_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float)
    progress: Mapped[str] = mapped_column(Text)

    def lag_s(self, now: float) -> float:
        """How long the version has been published in its source and missing here (0 once it is here)."""
        if self.state == State.REPLICATED:
            return 0.0
        return max(0.0, now - self.published_at)

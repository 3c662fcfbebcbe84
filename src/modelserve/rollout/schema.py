"""The rollouts' table: one row per rollout, its state stored before the server acts on it.

The newest row of a model says which of its versions the server serves: both, split by ``weight``,
while the rollout runs; the new one once promoted; the stable one once it failed or was aborted (so a
restart never brings back a version that was rolled back). Changing this file means adding a
migration that does the same.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Float, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

if TYPE_CHECKING:
    from modelserve.rollout.analysis import Thresholds

TABLE = "rollouts"
VERSION_TABLE = "rollouts_version"


class State(StrEnum):
    """Where a rollout is: progressing ⇄ paused, then promoted, failed or aborted."""

    PROGRESSING = "progressing"  # the new version takes its step's share; each interval is analysed
    PAUSED = "paused"  # the share stays where it is and no analysis runs until resumed
    PROMOTED = "promoted"  # every step passed: the new version serves all requests, it is the stable one
    FAILED = "failed"  # a check breached its threshold (or the version failed to load): rolled back
    ABORTED = "aborted"  # stopped by an operator: rolled back


ACTIVE = (State.PROGRESSING, State.PAUSED)


class Base(DeclarativeBase):
    """Declarative base with constraint names equal on every back-end, so migrations can name them."""

    metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_name)s"})


class Rollout(Base):
    """Moving the requests for one model that name no version from its stable version to a new one."""

    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(255), index=True)
    stable_version: Mapped[int] = mapped_column(Integer)
    new_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    steps: Mapped[str] = mapped_column(Text)  # JSON list of percentages, ascending
    step: Mapped[int] = mapped_column(Integer)  # index into steps of the share now given
    weight: Mapped[int] = mapped_column(Integer)  # percentage of the requests naming no version the new one takes
    interval_s: Mapped[float] = mapped_column(Float)
    max_error_rate: Mapped[float] = mapped_column(Float)  # a fraction: 0.01 is 1 %
    max_latency_ratio: Mapped[float] = mapped_column(Float)
    min_samples: Mapped[int] = mapped_column(Integer)
    latency_windows: Mapped[int] = mapped_column(Integer)  # windows in a row a latency breach needs
    # The stable version's p99 latency (seconds) in the last window it had enough requests: the step
    # that gives the new version every request compares against it.
    baseline_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text)  # why it failed, was aborted or paused; empty otherwise
    checks: Mapped[str] = mapped_column(Text)  # JSON list of the latest analyses, newest last
    created_at: Mapped[float] = mapped_column(Float)  # epoch seconds
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    @classmethod
    def begin(
        cls, model: str, stable: int, new: int, steps: list[int], interval_s: float, limits: Thresholds, now: float
    ) -> Rollout:
        """A rollout about to load its new version: progressing, at no share yet."""
        return cls(
            model=model,
            stable_version=stable,
            new_version=new,
            state=State.PROGRESSING,
            steps=json.dumps(steps),
            step=0,
            weight=0,
            interval_s=interval_s,
            max_error_rate=limits.max_error_rate,
            max_latency_ratio=limits.max_latency_ratio,
            min_samples=limits.min_samples,
            latency_windows=limits.latency_windows,
            baseline_p99_s=None,
            reason=f"loading version {new}",
            checks="[]",
            created_at=now,
            updated_at=now,
            finished_at=None,
        )

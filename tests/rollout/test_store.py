"""The rollouts' store on SQLite and a real PostgreSQL: its migrations, and each model's newest rollout."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from modelserve.db import open_engine
from modelserve.rollout.schema import VERSION_TABLE, Base, Rollout, State
from modelserve.rollout.store import RolloutStore, migrate


@pytest.fixture
def store(database_url: str) -> Iterator[RolloutStore]:
    engine = open_engine(database_url)
    yield RolloutStore(engine)
    engine.dispose()


def rollout(model: str, new_version: int, state: State = State.PROGRESSING) -> Rollout:
    return Rollout(
        model=model,
        stable_version=1,
        new_version=new_version,
        state=state,
        steps=json.dumps([10, 100]),
        step=0,
        weight=10,
        interval_s=60.0,
        max_error_rate=0.01,
        max_latency_ratio=1.5,
        min_samples=20,
        latency_windows=2,
        baseline_p99_s=None,
        reason="",
        checks="[]",
        created_at=1000.0,
        updated_at=1000.0,
        finished_at=None,
    )


def test_a_database_without_rollouts_is_read_without_being_written(store: RolloutStore) -> None:
    assert store.latest() == []
    assert store.history("m") == []
    assert "rollouts" not in inspect(store.engine).get_table_names()


def test_the_first_save_migrates_and_the_migrations_build_the_schema_of_the_models(store: RolloutStore) -> None:
    store.save(rollout("m", 2))

    assert {"rollouts", VERSION_TABLE} <= set(inspect(store.engine).get_table_names())
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == [], "the migrations and schema.py disagree"
    migrate(store.engine)  # twice is harmless


def test_each_model_reads_back_its_newest_rollout_as_last_saved(store: RolloutStore) -> None:
    first = rollout("m", 2, State.FAILED)
    store.save(first)
    store.save(rollout("other", 3))
    second = rollout("m", 4)
    store.save(second)
    second.weight, second.step, second.reason = 50, 1, "a reason"
    store.save(second)

    latest = {r.model: r for r in store.latest()}
    assert (latest["m"].id, latest["m"].new_version, latest["m"].weight, latest["m"].step) == (second.id, 4, 50, 1)
    assert latest["m"].reason == "a reason"
    assert latest["other"].new_version == 3
    assert [r.new_version for r in store.history("m")] == [4, 2]

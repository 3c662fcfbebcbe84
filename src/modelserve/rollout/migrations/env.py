"""Alembic's environment: migrations run on the connection ``store.migrate`` opened and locked."""

from __future__ import annotations

from alembic import context

from modelserve.rollout.schema import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()

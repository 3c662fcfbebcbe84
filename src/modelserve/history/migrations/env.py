"""Alembic's environment: migrations run on the connection ``store.migrate`` opened and locked.

There is no alembic.ini and no offline (SQL script) mode: the server migrates its own database at
startup, inside one transaction, so concurrent starters wait for each other instead of racing.
"""

from __future__ import annotations

from alembic import context

from modelserve.history.schema import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
# Batch mode lets later migrations alter columns on SQLite, which has almost no ALTER TABLE.
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()

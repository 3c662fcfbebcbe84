"""Alembic's environment for the replication jobs' chain: ``db.run_migrations``, on the connection ``db.upgrade``
opened and locked."""

from modelserve.db import run_migrations

run_migrations()

"""One module per schema revision, in ``down_revision`` order; Alembic skips this file."""

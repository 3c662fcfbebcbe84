"""Alembic migrations of the replication jobs, run by ``regions.jobs.migrate`` (``upgrade head``).

Their own chain and revision table, beside the traffic history's on the same database, so either can
change without the other. A package so that it ships in the wheel.
"""

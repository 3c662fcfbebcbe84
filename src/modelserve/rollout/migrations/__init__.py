"""Alembic migrations of the rollouts' table, run by ``rollout.store.migrate`` (``upgrade head``).

Their own chain and revision table, beside the traffic history's and the replication jobs' on the same
database, so each can change without the others. A package so that it ships in the wheel.
"""

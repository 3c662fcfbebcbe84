"""Alembic migrations of the traffic history, run by ``history.store.migrate`` at startup (``upgrade head``).

A package so that it ships in the wheel; Alembic reads the folder through ``modelserve.history:migrations``.
"""

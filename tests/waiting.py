"""Waiting on conditions in async tests without sleeping for wall-clock time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the event loop run, without sleeping, until ``predicate`` holds."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")

"""Fixtures of the batcher tests: batchers on the shared inference pool, closed at teardown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modelserve.batching.batcher import Batcher
from modelserve.models.stats import ModelStats
from tests.batching.runs import Arrays, Factory, GatedRun


@pytest.fixture
async def make_batcher(executor: ThreadPoolExecutor) -> AsyncIterator[Factory]:
    """Builds batchers on the shared pool; at teardown opens every gate and closes every batcher."""
    made: list[tuple[Batcher, Callable[[Arrays], Arrays]]] = []

    def make(run: Callable[[Arrays], Arrays], stats: ModelStats | None = None, **limits: Any) -> Batcher:
        batcher = Batcher("test", run, executor, stats or ModelStats(), **limits)
        made.append((batcher, run))
        return batcher

    yield make
    for batcher, run in made:
        if isinstance(run, GatedRun):
            run.gate.set()
        await asyncio.wait_for(batcher.close(), 30)

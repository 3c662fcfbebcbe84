"""Managers built the way ``server/app.py`` builds them, closed at each test's teardown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelserve.models.manager import ModelManager
from modelserve.models.spec import BatchingDefaults
from modelserve.repository.layout import ModelRepository

Factory = Callable[..., ModelManager]


@pytest.fixture
async def make_manager(executor: ThreadPoolExecutor) -> AsyncIterator[Factory]:
    """Builds managers; keyword arguments are the manager's own (``control_enabled`` defaults to True).

    Batches always run in the inference pool: a model fast enough would otherwise run inline on the
    event loop, and pass by the threads the deadline tests hold busy.
    """
    made: list[ModelManager] = []

    def make(
        root: Path,
        *,
        control_enabled: bool = True,
        load_timeout_s: float = 60.0,
        request_timeout_s: float = 60.0,
        **options: Any,
    ) -> ModelManager:
        manager = ModelManager(
            ModelRepository(root),
            executor,
            defaults=BatchingDefaults(max_batch_size=8, max_queue_delay_ms=0.0, max_queue_size=64, inline_below_us=0),
            load_timeout_s=load_timeout_s,
            request_timeout_s=request_timeout_s,
            control_enabled=control_enabled,
            **options,
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await asyncio.wait_for(manager.close(), 30)

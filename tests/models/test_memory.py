"""Unloading gives memory back: RSS after many load/unload cycles is where it was after the first."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from modelserve.models.manager import ModelManager
from modelserve.models.memory import rss_bytes
from modelserve.models.spec import BatchingDefaults
from modelserve.repository.layout import ModelRepository
from modelserve.types import InferenceRequest
from tests.builders import matmul_onnx

CYCLES = 50


def test_rss_reads_this_process() -> None:
    before = rss_bytes()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    assert rss_bytes() - before > 48 * 1024 * 1024
    del block


async def test_rss_is_back_within_10_percent_after_50_load_unload_cycles(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    matmul_onnx(tmp_path / "big" / "1" / "model.onnx")
    manager = ModelManager(
        ModelRepository(tmp_path),
        executor,
        defaults=BatchingDefaults(max_batch_size=8, max_queue_delay_ms=0.0, max_queue_size=64),
        load_timeout_s=60.0,
        request_timeout_s=60.0,
        control_enabled=True,
    )
    request = InferenceRequest("big", {"x": np.ones((4, 2048), np.float32)})

    async def cycle() -> None:
        await manager.load("big")
        response = await manager.infer(request)
        assert response.outputs["y"].shape == (4, 2048)
        await manager.unload("big")

    for _ in range(2):  # the runtime's one-time allocations (thread pools, kernels) come first
        await cycle()
    baseline = rss_bytes()
    for _ in range(CYCLES):
        await cycle()
    grown = rss_bytes() - baseline
    # Without malloc_trim after unload, this grows by some 250 MiB (about 5 MiB a cycle).
    assert grown < 0.10 * baseline, f"RSS grew {grown / 2**20:.1f} MiB over {CYCLES} cycles from {baseline / 2**20:.1f}"

"""The usage sampler reads a real manager's counters and footprints: exact request, sample and compute
deltas, memory integrated between samples, and the last counts of a version unloaded between two."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modelserve.models.manager import ModelManager
from modelserve.models.spec import BatchingDefaults
from modelserve.regions.usage import CPU, USAGE_BUCKET_S, UsageRecorder, UsageSampler, gpu_device, runs_on_gpu
from modelserve.repository.config import ModelConfig, Platform
from modelserve.repository.layout import ModelRepository
from modelserve.runtimes.base import runtime_class
from modelserve.types import InferenceRequest
from tests.clock import Clock

START = 20_000 * 86_400.0  # a bucket start: every sample below lands in its hour


@pytest.fixture
async def manager(built_repository: Path, executor: ThreadPoolExecutor) -> AsyncIterator[ModelManager]:
    """A manager as the server builds one, on the example repository, models loaded by the test."""
    built = ModelManager(
        ModelRepository(built_repository),
        executor,
        defaults=BatchingDefaults(max_batch_size=8, max_queue_delay_ms=0.0, max_queue_size=64, inline_below_us=0),
        load_timeout_s=60.0,
        request_timeout_s=60.0,
        control_enabled=True,
    )
    yield built
    await asyncio.wait_for(built.close(), 30)


def request(batch: int) -> InferenceRequest:
    return InferenceRequest("mlp", {"input": np.zeros((batch, 16), np.float32)})


async def test_samples_turn_counters_into_deltas_and_memory_into_byte_seconds(manager: ModelManager) -> None:
    clock = Clock(START)
    recorder = UsageRecorder()
    sampler = UsageSampler(manager.every_version, recorder, "eu-west-1", clock=clock)
    (record,) = await manager.load("mlp")
    footprint = record.memory["CPU"]
    assert footprint > 0

    for batch in (1, 1, 4):
        await manager.infer(request(batch))
    clock.now += 10
    sampler.sample()
    first = recorder.take()

    key = ("mlp", "1", "eu-west-1", CPU, "", int(START))
    assert first.keys() == {key}
    assert first[key].requests == 3
    assert first[key].inferences == 6
    assert first[key].compute_seconds > 0
    assert first[key].memory_byte_seconds == footprint * 10 / 2, "seen loaded once: half the interval"

    await manager.infer(request(2))
    clock.now += 20
    sampler.sample()
    second = recorder.take()[key]
    assert (second.requests, second.inferences) == (1, 2)
    assert second.memory_byte_seconds == footprint * 20, "loaded at both ends: the whole interval"

    clock.now += 5
    sampler.sample()
    assert recorder.take()[key].requests == 0, "an idle model still holds its memory, and nothing else"


async def test_a_version_unloaded_between_samples_gives_its_last_counts_once(manager: ModelManager) -> None:
    clock = Clock(START)
    recorder = UsageRecorder()
    sampler = UsageSampler(manager.every_version, recorder, "local", clock=clock)
    await manager.load("mlp")
    clock.now += 1
    sampler.sample()
    recorder.take()

    await manager.infer(request(1))
    await manager.unload("mlp")
    clock.now += 4
    sampler.sample()
    (last,) = recorder.take().values()
    assert last.requests == 1, "answered before the unload, counted after it"

    clock.now += USAGE_BUCKET_S
    sampler.sample()
    assert recorder.take() == {}, "an unloaded version uses nothing"

    (reloaded,) = await manager.load("mlp")
    await manager.infer(request(3))
    clock.now += 2
    sampler.sample()
    (row,) = recorder.take().values()
    assert (row.requests, row.inferences) == (1, 3), "a reload counts from its own start"
    assert row.memory_byte_seconds == reloaded.memory["CPU"] * 2 / 2


async def test_a_version_loaded_used_and_unloaded_between_two_samples_is_counted(manager: ModelManager) -> None:
    clock = Clock(START)
    recorder = UsageRecorder()
    sampler = UsageSampler(manager.every_version, recorder, "local", clock=clock)
    await manager.load("mlp")
    await manager.infer(request(2))
    await manager.unload("mlp")
    clock.now += 10
    sampler.sample()

    rows = recorder.take()
    assert list(rows) == [("mlp", "1", "local", CPU, "", int(START))]
    (row,) = rows.values()
    assert (row.requests, row.inferences) == (1, 2)
    assert row.memory_byte_seconds == 0, "never seen holding memory"


async def test_models_on_a_cpu_host_count_cpu_seconds_and_tensorrt_counts_gpu_seconds(
    manager: ModelManager, tmp_path: Path
) -> None:
    for name in ("mlp", "simple", "iris", "tiny_cnn"):  # ONNX (one without a config.yaml), sklearn, TorchScript
        for record in await manager.load(name):
            assert record.runtime is not None
            assert not runs_on_gpu(record.runtime), name
    engine = runtime_class(Platform.TENSORRT)(tmp_path / "model.plan", ModelConfig(platform=Platform.TENSORRT))

    assert runs_on_gpu(engine), "an engine runs on the GPU it was built for, loaded or not"
    assert gpu_device("NVIDIA H100 80GB HBM3") == "gpu:H100 80GB HBM3"
    assert gpu_device("") == "gpu:unknown"

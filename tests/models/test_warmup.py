"""config.yaml ``warmup``: a model turns READY only after its warmup ran, and a warmup that cannot run
fails the load with the reason, on real models and real runtimes."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modelserve.errors import ModelLoadError
from modelserve.models.manager import ModelManager, ModelState
from modelserve.models.spec import BatchingDefaults
from modelserve.repository.config import ModelConfig
from modelserve.repository.layout import ModelRepository
from modelserve.types import InferenceRequest
from tests.builders import deep_onnx, deep_torchscript, odd_batch_fails_onnx, scale_onnx, write_config

Factory = Callable[[Path], ModelManager]
TORCH_CONFIG = """\
platform: torchscript
max_batch_size: 8
inputs: [{name: x, datatype: FP32, dims: [16]}]
outputs: [{name: y, datatype: FP32, dims: [16]}]
"""
ODD_CONFIG = "max_batch_size: 0\n"  # the file's [n, 3] runs for an even n only


@pytest.fixture
async def make_manager(executor: ThreadPoolExecutor) -> AsyncIterator[Factory]:
    """Managers built as the composition root builds them; each closed at teardown."""
    made: list[ModelManager] = []

    def make(root: Path) -> ModelManager:
        defaults = BatchingDefaults(max_batch_size=8, max_queue_delay_ms=0.0, max_queue_size=64)
        manager = ModelManager(
            ModelRepository(root), executor, defaults=defaults, load_timeout_s=60, request_timeout_s=60,
            control_enabled=True,
        )  # fmt: skip
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await asyncio.wait_for(manager.close(), 30)


async def _load_failure(manager: ModelManager, name: str) -> str:
    with pytest.raises(ModelLoadError):
        await manager.load(name)
    (record,) = await manager.versions(name)
    assert record.state is ModelState.FAILED
    return record.reason


async def test_a_warmup_that_fails_fails_the_load_with_its_reason(tmp_path: Path, make_manager: Factory) -> None:
    odd_batch_fails_onnx(tmp_path / "odd" / "1" / "model.onnx")
    write_config(tmp_path / "odd", ODD_CONFIG + "warmup: {inputs: zero}\n")  # one row: odd, fails in the model
    reason = await _load_failure(make_manager(tmp_path), "odd")
    assert "odd/1/model.onnx: warmup failed: batch size 1:" in reason, reason
    assert "Reshape" in reason or "shape" in reason.lower(), reason


async def test_warmup_inputs_from_a_file_are_what_runs(tmp_path: Path, make_manager: Factory) -> None:
    odd_batch_fails_onnx(tmp_path / "odd" / "1" / "model.onnx")
    np.savez(tmp_path / "odd" / "warmup.npz", x=np.ones((2, 3)))  # float64: cast to the input's FP32
    write_config(tmp_path / "odd", ODD_CONFIG + "warmup: {count: 3, inputs: file, file: warmup.npz}\n")
    manager = make_manager(tmp_path)
    (record,) = await manager.load("odd")
    assert record.state is ModelState.READY
    np.savez(tmp_path / "odd" / "warmup.npz", x=np.ones((3, 3)))  # three rows: the model fails on them
    reason = await _load_failure(make_manager(tmp_path), "odd")
    assert "warmup failed: batch size 1:" in reason, reason


async def test_a_warmup_file_must_hold_every_input(tmp_path: Path, make_manager: Factory) -> None:
    scale_onnx(tmp_path / "scaled" / "1" / "model.onnx")
    np.savez(tmp_path / "scaled" / "warmup.npz", input=np.ones((1, 4), np.float32))
    write_config(tmp_path / "scaled", "warmup: {inputs: file, file: warmup.npz}\n")
    reason = await _load_failure(make_manager(tmp_path), "scaled")
    assert "warmup.npz has no array named 'x' (it has input)" in reason, reason
    np.save(tmp_path / "scaled" / "one.npy", np.ones((1, 5), np.float32))
    write_config(tmp_path / "scaled", "warmup: {inputs: file, file: one.npy}\n")
    reason = await _load_failure(make_manager(tmp_path), "scaled")
    assert "warmup failed: input 'x' has shape [1, 5]" in reason, reason


async def test_batch_sizes_beyond_max_batch_size_are_refused(tmp_path: Path, make_manager: Factory) -> None:
    scale_onnx(tmp_path / "scaled" / "1" / "model.onnx")
    write_config(tmp_path / "scaled", "max_batch_size: 4\nwarmup: {batch_sizes: [1, 8]}\n")
    reason = await _load_failure(make_manager(tmp_path), "scaled")
    assert reason.endswith("warmup failed: batch_sizes [8] exceed max_batch_size 4"), reason


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("{inputs: file}", "inputs: file needs file"),
        ("{file: w.npz}", "inputs: file needs file"),
        ("{inputs: file, file: w.csv}", "must be an .npz"),
        ("{batch_sizes: []}", "non-empty list of positive sizes"),
        ("{count: 0}", "warmup.count"),
        ("{inputs: ones}", "warmup.inputs"),
    ],
)
def test_a_bad_warmup_section_names_its_problem(tmp_path: Path, section: str, problem: str) -> None:
    config = write_config(tmp_path / "m", f"warmup: {section}\n")
    with pytest.raises(ModelLoadError, match=problem):
        ModelConfig.from_file(config)


async def _first_and_median_ms(manager: ModelManager, name: str, features: int) -> tuple[float, float]:
    """Load ``name`` afresh, then time its first request and the median of 15 more (milliseconds)."""
    await manager.load(name)
    request = InferenceRequest(name, {"x": np.ones((1, features), np.float32)})
    times = []
    for _ in range(16):
        started = time.perf_counter()
        await manager.infer(request)
        times.append((time.perf_counter() - started) * 1000)
    await manager.unload(name)
    return times[0], statistics.median(times[1:])


async def _first_request_ratio(manager: ModelManager, name: str, features: int) -> float:
    """First request over the warm median, the median of five fresh loads (one noisy load cannot decide)."""
    ratios = []
    for _ in range(5):
        first, median = await _first_and_median_ms(manager, name, features)
        ratios.append(first / median)
    return statistics.median(ratios)


async def test_a_torchscript_model_answers_its_first_request_warm(tmp_path: Path, make_manager: Factory) -> None:
    deep_torchscript(tmp_path / "cold" / "1" / "model.pt")
    write_config(tmp_path / "cold", TORCH_CONFIG)
    deep_torchscript(tmp_path / "warm" / "1" / "model.pt")
    write_config(tmp_path / "warm", TORCH_CONFIG + "warmup: {count: 3, batch_sizes: [1]}\n")
    manager = make_manager(tmp_path)
    # Without warmup the profiling executor's first calls reach the first client: far slower.
    assert await _first_request_ratio(manager, "cold", 16) > 5
    assert await _first_request_ratio(manager, "warm", 16) < 2


async def test_an_onnx_model_answers_its_first_request_warm(tmp_path: Path, make_manager: Factory) -> None:
    deep_onnx(tmp_path / "warm" / "1" / "model.onnx", features=128)
    write_config(tmp_path / "warm", "warmup: {count: 2}\n")
    assert await _first_request_ratio(make_manager(tmp_path), "warm", 128) < 2

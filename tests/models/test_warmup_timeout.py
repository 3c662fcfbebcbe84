"""A warmup that outlives MODEL_LOAD_TIMEOUT: the load fails, the warmup stops after the call under way,
and the runtime is freed only once that call has returned, on a real ONNX model and the inference pool."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.models.spec import BatchingDefaults, resolve
from modelserve.models.warmup import warm_up
from modelserve.repository.config import ModelConfig, Platform, Warmup
from modelserve.runtimes.base import Arrays
from modelserve.runtimes.onnx import OnnxRuntime
from tests.builders import scale_onnx

WAIT_S = 10.0
TIMEOUT_S = 0.5  # the load's timeout: ample for the pool's idle thread to start the first call


class HeldOnnx(OnnxRuntime):
    """ONNX Runtime whose first call is held until the test releases it (a slow first call, as a large
    model's is), with every call's start and end and the unload's time written down."""

    def __init__(self, path: Path, config: ModelConfig) -> None:
        super().__init__(path, config)
        self.release = threading.Event()
        self.unloaded = threading.Event()
        self.calls: list[tuple[float, float]] = []  # (started, ended), perf_counter
        self.unloaded_at = 0.0

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        started = time.perf_counter()
        if not self.calls:
            self.release.wait(WAIT_S)
        outputs = super().infer(inputs)
        self.calls.append((started, time.perf_counter()))
        return outputs

    def unload(self) -> None:
        super().unload()
        self.unloaded_at = time.perf_counter()
        self.unloaded.set()


async def test_a_timed_out_warmup_starts_no_further_call_and_unloads_after_the_last(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    model_file = scale_onnx(tmp_path / "slow" / "1" / "model.onnx")
    config = ModelConfig(warmup=Warmup(count=50, batch_sizes=[1, 4]))  # 100 calls configured
    runtime = HeldOnnx(model_file, config)
    spec = resolve("slow", 1, Platform.ONNX, config, runtime.load(), BatchingDefaults(), model_file)

    reason = await warm_up(runtime, spec, config.warmup, model_file, TIMEOUT_S, executor)

    assert reason == f"{model_file}: warmup did not finish within {TIMEOUT_S:g} s (MODEL_LOAD_TIMEOUT)"
    timed_out_at = time.perf_counter()
    assert not runtime.unloaded.is_set(), "the runtime was freed under the call still running"
    runtime.release.set()  # the first call, held through the timeout, returns now
    assert await asyncio.to_thread(runtime.unloaded.wait, WAIT_S)
    assert len(runtime.calls) == 1, f"{len(runtime.calls) - 1} warmup call(s) ran after the timeout"
    (started, ended), *_ = runtime.calls
    assert started < timed_out_at
    assert runtime.unloaded_at >= ended

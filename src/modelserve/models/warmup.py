"""Warming a freshly loaded model version before it turns READY.

The first calls of a model are slow: ONNX Runtime grows its memory arena and plans its buffers,
PyTorch's TorchScript profiling executor records and then optimises the graph on its first two runs.
A model that turns READY before that has happened makes its first clients pay for it. config.yaml
``warmup`` says what to run; the runs go straight to the runtime, past the batcher, so they count in
no request statistics.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import InvalidInput
from modelserve.models.spec import ModelSpec
from modelserve.repository.config import Warmup, WarmupInputs
from modelserve.runtimes.base import Runtime
from modelserve.types import TensorSpec, numpy_dtype, read_input_arrays

log = logging.getLogger("modelserve.models")

Arrays = dict[str, np.ndarray[Any, Any]]


class WarmupError(Exception):
    """Why a warmup could not run, in the operator's words."""


async def warm_up(
    runtime: Runtime, spec: ModelSpec, warmup: Warmup | None, model_file: Path, timeout_s: float, executor: Executor
) -> str:
    """Run the configured warmup on ``executor``; return why it failed, or "" when it ran.

    ``executor`` is the inference pool: PyTorch and ONNX Runtime keep per-thread state that a thread's
    first call sets up, so warming the threads requests will run on spares them that too. A failed
    warmup leaves the runtime unloaded: the version will not serve, so it holds no memory.
    """
    if warmup is None:
        return ""
    started = time.perf_counter()
    try:
        late = await _run_within(runtime, spec, warmup, model_file, timeout_s, executor)
    except WarmupError as exc:
        runtime.unload()
        return f"{model_file}: warmup failed: {exc}"
    if late is not None:
        # The runtime is freed only once the call under way has returned, never under it. Until then the
        # inference pool's thread stays busy.
        late.add_done_callback(lambda _: runtime.unload())
        return f"{model_file}: warmup did not finish within {timeout_s:g} s (MODEL_LOAD_TIMEOUT)"
    runs = warmup.count * len(_batch_sizes(spec, warmup))
    log.info("model %s version %s warmed up: %d runs in %.3f s", spec.name, spec.version, runs, _since(started))
    return ""


# A memory budget needs what a model costs once it has served: ONNX Runtime's arena and the buffers
# a first run plans are allocated then (ResNet-18: some 5 MiB on top of the 45 a load alone shows).
# A model without a configured warmup runs this once before its footprint is read.
FIRST_RUN = Warmup(count=1, batch_sizes=[1], inputs=WarmupInputs.ZERO)


async def first_run(runtime: Runtime, spec: ModelSpec, model_file: Path, timeout_s: float, executor: Executor) -> None:
    """One batch-1 call of zeros, so that a footprint read after it includes what serving allocates.

    Unlike a configured warmup it cannot fail the load: a model that refuses zeros, or is slow, loads
    as it would have, and its footprint is corrected at its first unload as before.
    """
    try:
        late = await _run_within(runtime, spec, FIRST_RUN, model_file, timeout_s, executor)
    except WarmupError as exc:
        log.info("model %s version %s: no first run for the memory budget: %s", spec.name, spec.version, exc)
        return
    if late is not None:
        log.warning("model %s version %s: its first run for the memory budget did not finish", spec.name, spec.version)


async def _run_within(
    runtime: Runtime, spec: ModelSpec, warmup: Warmup, model_file: Path, timeout_s: float, executor: Executor
) -> asyncio.Future[None] | None:
    """Run ``warmup`` on ``executor`` for up to ``timeout_s``: None once it ran, else the call still under
    way, which cannot be interrupted; none starts after it. A call that fails raises WarmupError."""
    stop = threading.Event()
    running = asyncio.get_running_loop().run_in_executor(executor, _run, runtime, spec, warmup, model_file, stop)
    try:
        await asyncio.wait_for(asyncio.shield(running), timeout_s)
    except TimeoutError:
        stop.set()
        return running
    return None


def warmup_inputs(spec: ModelSpec, warmup: Warmup, batch_size: int, model_folder: Path) -> Arrays:
    """The inputs of one warmup call at ``batch_size`` (ignored for a model without a batch dimension)."""
    if warmup.inputs is WarmupInputs.FILE:
        assert warmup.file is not None
        inputs = _from_file(spec, model_folder / warmup.file, batch_size)
    else:
        rng = np.random.default_rng(0)
        inputs = {t.name: _generated(t, _shape(spec, t, batch_size), warmup.inputs, rng) for t in spec.inputs}
    try:
        spec.validate(inputs)
    except InvalidInput as exc:
        raise WarmupError(exc.message) from None
    return inputs


def _run(runtime: Runtime, spec: ModelSpec, warmup: Warmup, model_file: Path, stop: threading.Event) -> None:
    for batch_size in _batch_sizes(spec, warmup):
        inputs = warmup_inputs(spec, warmup, batch_size, model_file.parent.parent)
        for _ in range(warmup.count):
            if stop.is_set():  # the load gave up waiting: the version will not serve
                return
            try:
                runtime.infer(inputs)
            except Exception as exc:  # whatever the backend raises for inputs it cannot run
                raise WarmupError(f"batch size {batch_size}: {type(exc).__name__}: {exc}") from exc


def _batch_sizes(spec: ModelSpec, warmup: Warmup) -> list[int]:
    if spec.max_batch_size == 0:
        return [1]
    if too_big := [size for size in warmup.batch_sizes if size > spec.max_batch_size]:
        raise WarmupError(f"batch_sizes {too_big} exceed max_batch_size {spec.max_batch_size}")
    return warmup.batch_sizes


def _shape(spec: ModelSpec, tensor: TensorSpec, batch_size: int) -> tuple[int, ...]:
    # Open dimensions other than the batch run at size 1: the smallest shape the model surely accepts.
    batched = spec.max_batch_size > 0
    return tuple(batch_size if batched and i == 0 else max(d, 1) for i, d in enumerate(tensor.shape))


def _generated(
    tensor: TensorSpec, shape: tuple[int, ...], kind: WarmupInputs, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    if tensor.datatype == "BYTES":
        return np.full(shape, b"" if kind is WarmupInputs.ZERO else b"warmup", dtype=object)
    dtype = numpy_dtype(tensor.datatype)
    if kind is WarmupInputs.ZERO:
        return np.zeros(shape, dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    # 0 and 1 are valid for every integer or boolean input, indices into an embedding table included.
    return rng.integers(0, 2, shape).astype(dtype)


def _from_file(spec: ModelSpec, path: Path, batch_size: int) -> Arrays:
    try:
        arrays = read_input_arrays(path, [tensor.name for tensor in spec.inputs])
    except ValueError as exc:
        raise WarmupError(str(exc)) from None
    inputs = {}
    for tensor in spec.inputs:
        array = arrays[tensor.name]
        dtype = numpy_dtype(tensor.datatype)
        if tensor.datatype != "BYTES" and np.can_cast(array.dtype, dtype, "same_kind"):
            array = array.astype(dtype, copy=False)  # np.save keeps float64 unless told; warmup need not care
        if spec.max_batch_size > 0 and array.ndim == len(tensor.shape) and len(array):
            array = np.take(array, np.arange(batch_size) % len(array), axis=0)
        inputs[tensor.name] = array
    return inputs


def _since(started: float) -> float:
    return time.perf_counter() - started

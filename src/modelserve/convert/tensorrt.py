"""TensorRT engines from ONNX, where the ``tensorrt`` package and an NVIDIA GPU are present.

An engine is built for one GPU model and one TensorRT version; the version goes into config.yaml so
the server explains a mismatch before it tries to load the engine. FP16 lets TensorRT choose FP16
kernels; INT8 takes the statically quantised ONNX model (QDQ), whose scales TensorRT uses as given.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from modelserve.convert.precision import Precision
from modelserve.convert.source import ConversionError, InputSpec

LEVELS = range(6)  # TensorRT's builder optimisation levels; 3 is its default


def missing() -> str:
    """What this machine lacks to build an engine, or "" when it has everything."""
    lacking = []
    if importlib.util.find_spec("tensorrt") is None:
        lacking.append("the `tensorrt` Python package (pip install 'modelserve[gpu]')")
    if _gpu_count() == 0:
        lacking.append("an NVIDIA GPU with its driver (libcuda found no device)")
    return " and ".join(lacking)


def _gpu_count() -> int:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def build_engine(
    model: Path, target: Path, inputs: list[InputSpec], *, precision: Precision, level: int, max_batch_size: int
) -> str:
    """Build ``target`` from the ONNX ``model``; return the TensorRT version that built it."""
    if lacking := missing():
        raise ConversionError(f"a TensorRT engine needs {lacking}; convert without --engine tensorrt for ONNX")
    trt: Any = importlib.import_module("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT cannot parse {model}: {errors}")
    config = builder.create_builder_config()
    config.builder_optimization_level = level
    if precision is Precision.FP16:
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision is Precision.INT8:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for spec in inputs:
        rest = tuple(spec.shape[1:])
        if max_batch_size > 0:
            profile.set_shape(spec.name, (1, *rest), (max(1, spec.shape[0]), *rest), (max_batch_size, *rest))
        else:
            profile.set_shape(spec.name, spec.shape, spec.shape, spec.shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConversionError(f"TensorRT could not build an engine from {model}; its log above says why")
    target.write_bytes(bytes(serialized))
    return str(trt.__version__)

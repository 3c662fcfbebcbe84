"""How a converted model compares with its source: accuracy on sample inputs, and speed measured here.

Accuracy is the largest absolute difference over every output element, and for outputs shaped like a
classifier's scores ([batch, classes]) the share of samples whose top-1 class agrees. Speed is the
median time of a call in ONNX Runtime on this machine, the converted model against the FP32 ONNX
model it came from; medians, because a shared machine's slowest calls say more about its neighbours.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from modelserve.convert.source import Arrays


@dataclass
class OutputAccuracy:
    """One output compared with the source's."""

    name: str
    max_abs_error: float
    max_abs_reference: float
    top1_agreement: float | None  # None when the output is not [batch, classes] scores


@dataclass
class Report:
    """What a conversion prints, and what ``--json`` writes."""

    source: str
    precision: str
    optimization_level: int
    samples: int
    outputs: list[OutputAccuracy] = field(default_factory=list)
    accuracy_on: str = "random inputs"  # or calibration rows: held out of calibration, or in-sample
    baseline_ms: float = 0.0
    converted_ms: float = 0.0
    speed_batch: int = 1
    written: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)  # what would likely convert better, and why

    @property
    def max_abs_error(self) -> float:
        """The worst difference over every output."""
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def speedup(self) -> float:
        """How many times faster the converted model runs than the FP32 ONNX model."""
        return self.baseline_ms / self.converted_ms if self.converted_ms else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data, derived figures included."""
        return asdict(self) | {"max_abs_error": self.max_abs_error, "speedup": round(self.speedup, 3)}


def compare(reference: Arrays, converted: Arrays) -> list[OutputAccuracy]:
    """Each output of ``converted`` against ``reference``, in the reference's order."""
    results = []
    for name, expected in reference.items():
        actual = np.asarray(converted[name])
        expected_f = np.asarray(expected, dtype=np.float64)
        error = float(np.max(np.abs(actual.astype(np.float64) - expected_f))) if expected.size else 0.0
        top1 = None
        if expected.ndim == 2 and expected.shape[1] > 1 and expected.dtype.kind == "f":
            top1 = float(np.mean(np.argmax(actual, axis=1) == np.argmax(expected, axis=1)))
        scale = float(np.max(np.abs(expected_f))) if expected.size else 0.0
        results.append(OutputAccuracy(name, error, scale, top1))
    return results


def median_ms(call: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """The median wall time of ``call`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def advise(precision: str, calibrated: bool, operators: set[str], speedup: float) -> list[str]:
    """What to try instead when the choice made is known to be slow on this kind of model.

    Dynamic INT8 quantises every activation at run time and runs convolutions as ConvInteger, which
    ONNX Runtime's CPU kernels do slower than FP32 convolutions (ResNet-18: 0.23x, docs/PERFORMANCE.md);
    FP16 has few CPU kernels, so it runs as FP32 between casts there."""
    advice = []
    if precision == "int8" and not calibrated and "Conv" in operators:
        advice.append(
            f"dynamic INT8 of a convolutional network ran at {speedup:.2f}x FP32 here: convolutions become "
            "ConvInteger with activations quantised on every call; static INT8 (--calibration-data with a few "
            "hundred real inputs) keeps them fused and is usually faster (ResNet-18: 2.4x)"
        )
    if precision == "fp16" and speedup < 1.0:
        advice.append(
            f"FP16 ran at {speedup:.2f}x FP32 here: ONNX Runtime has few FP16 kernels for the CPU, so it pays on "
            "a GPU (CUDA or --engine tensorrt), or to halve the file; on a CPU try --precision int8"
        )
    return advice

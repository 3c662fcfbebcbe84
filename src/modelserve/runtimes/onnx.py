"""ONNX Runtime: the default backend, on the CPU, or CUDA / TensorRT where the providers exist.

On the CPU, a model's ``instance_count`` defaults to the CPUs this process may use and each call to
``intra_op_num_threads`` = CPUs / instances, so by default every call runs on one thread and the
inference threads alone decide how many run at once, whatever the number of models. That measured the
most samples per second and the least CPU per sample (docs/PERFORMANCE.md, Threads and instances);
onnxruntime's own default, one thread per physical core of the host, ignores container limits, and
its idle threads spin on cores that other calls want.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from modelserve.cpus import available_cpus
from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig
from modelserve.runtimes.base import Arrays, Runtime, Signature
from modelserve.types import TensorSpec

_ORT_TO_DATATYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# Fastest first; ONNX Runtime falls through to the next for any node a provider cannot run.
_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str]) -> list[str]:
    """The execution providers to use, best first, out of those this onnxruntime build has."""
    return [p for p in _PREFERRED_PROVIDERS if p in available]


def instance_count(config: ModelConfig, providers: Sequence[str] | None = None) -> int:
    """An ONNX model's ``instance_count``: config.yaml's, else one per CPU on the CPU, and one on a GPU,
    where batches that grow serve better than more of them at once."""
    if "instance_count" in config.model_fields_set:
        return config.instance_count
    chosen = choose_providers(ort.get_available_providers()) if providers is None else providers
    return available_cpus() if chosen[:1] == ["CPUExecutionProvider"] else 1


class OnnxRuntime(Runtime):
    """An ``onnxruntime.InferenceSession``; its ``run`` releases the GIL, so threads run in parallel."""

    session: ort.InferenceSession | None = None

    def load(self) -> Signature:
        if not self.path.exists():
            raise ModelLoadError(f"model file not found: {self.path}")
        options = ort.SessionOptions()
        providers = choose_providers(ort.get_available_providers())
        # inter-op threads exist only in onnxruntime's parallel execution mode, which is never turned on:
        # its 0 (the default) creates none.
        defaults = {
            "intra_op_num_threads": max(1, available_cpus() // instance_count(self.config, providers)),
            "inter_op_num_threads": 0,
        }
        for name, default in defaults.items():
            value = self.config.parameters.get(name, default)
            try:
                count = int(value) if not isinstance(value, bool | float) else -1
            except ValueError:
                count = -1
            if count < 0:
                raise ModelLoadError(f"{self.path}: parameters.{name} must be a non-negative integer, got {value!r}")
            setattr(options, name, count)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for any bad file
            raise ModelLoadError(f"{self.path}: not a loadable ONNX model: {exc}") from exc
        inputs = tuple(_spec(i) for i in self.session.get_inputs())
        outputs = tuple(_spec(o) for o in self.session.get_outputs())
        batched = bool(inputs) and all(spec.shape[:1] == (-1,) for spec in inputs)
        self._string_inputs = {s.name for s in inputs if s.datatype == "BYTES"}
        self._output_names = [o.name for o in outputs]
        return Signature(inputs=inputs, outputs=outputs, batched=batched)

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        assert self.session is not None, "infer called before load"
        feed = {name: _to_ort(array) if name in self._string_inputs else array for name, array in inputs.items()}
        results = self.session.run(self._output_names, feed)
        return dict(zip(self._output_names, results, strict=True))

    def memory_bytes(self) -> int:
        # The weights dominate a session's footprint, and they are what the file holds.
        return self.path.stat().st_size if self.session is not None else 0

    def unload(self) -> None:
        self.session = None

    @property
    def providers(self) -> list[str]:
        """The providers the session actually runs on."""
        return list(self.session.get_providers()) if self.session is not None else []


def _spec(node: Any) -> TensorSpec:
    datatype = _ORT_TO_DATATYPE.get(node.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{node.name}' has type {node.type}, which this server cannot serve")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (node.shape or []))
    return TensorSpec(name=node.name, datatype=datatype, shape=shape)


def _to_ort(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # ONNX Runtime wants str for string tensors; the protocol carries bytes.
    decoded: np.ndarray[Any, Any] = np.vectorize(
        lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object]
    )(array)
    return decoded

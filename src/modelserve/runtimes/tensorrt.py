"""TensorRT engines (``model.plan`` / ``model.trt``), on an NVIDIA GPU with the ``tensorrt`` package.

An engine only runs on the TensorRT version that built it. When deserialising fails, the server says
which versions are involved and how to rebuild, instead of TensorRT's bare "deserialization failed".
Device buffers are torch CUDA tensors: the GPU image carries torch, and it spares a second CUDA binding.

An execution context holds the shapes and buffer addresses of the call that set them, so two threads
must never use one at once: each of the model's ``instance_count`` instances has its own context and
CUDA stream, and a call borrows one for its whole duration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelserve.errors import InferenceFailed, ModelLoadError
from modelserve.runtimes.base import Arrays, Runtime, Signature
from modelserve.runtimes.instances import InstancePool
from modelserve.types import TensorSpec, datatype_of

_MISMATCH = re.compile(r"expecting library version (?P<runtime>[\d.]+) got (?P<engine>[\d.]+)")
_TAG_MISMATCH = re.compile(r"Current Version: (?P<runtime>\d+), Serialized Engine Version: (?P<engine>\d+)")


def rebuild_command(path: Any) -> str:
    """The command that rebuilds an engine for the TensorRT installed here."""
    return f"trtexec --onnx=<source.onnx> --saveEngine={path} --fp16"  # trtexec ships with TensorRT


def explain_deserialize_failure(path: Any, runtime_version: str, log: list[str], built_with: str | None) -> str:
    """Why an engine did not deserialise, from TensorRT's log and the version the config records."""
    engine_version = built_with
    for line in log:
        if match := _MISMATCH.search(line) or _TAG_MISMATCH.search(line):
            engine_version = engine_version or match["engine"]
    if engine_version and engine_version != runtime_version:
        return (
            f"{path}: TensorRT version mismatch: engine built with {engine_version}, runtime is "
            f"{runtime_version}; rebuild it here: {rebuild_command(path)}"
        )
    detail = "; ".join(log[-3:]) or "no detail from TensorRT"
    return f"{path}: engine deserialization failed - version mismatch or corrupted file ({detail})"


@dataclass(frozen=True, slots=True)
class _Instance:
    """What one call at a time uses: an execution context, and the stream its work is queued on."""

    context: Any
    stream: Any


class TensorRTRuntime(Runtime):
    """A deserialised engine and an execution context per instance (``instance_count``)."""

    engine: Any = None
    _instances: InstancePool[_Instance] | None = None
    _torch: Any  # the module, imported by load

    def load(self) -> Signature:
        if not self.path.exists():
            raise ModelLoadError(f"model file not found: {self.path}")
        try:
            import tensorrt as trt
            import torch
        except ImportError as exc:
            raise ModelLoadError(
                f"{self.path}: platform tensorrt needs the `tensorrt` package, PyTorch and an NVIDIA GPU "
                f"(pip install 'modelserve[gpu,torch]'); missing: {exc.name}"
            ) from exc
        if not torch.cuda.is_available():
            raise ModelLoadError(f"{self.path}: platform tensorrt needs an NVIDIA GPU and none is visible")
        built_with = self.config.parameters.get("tensorrt_version")
        if built_with and str(built_with) != trt.__version__:
            raise ModelLoadError(explain_deserialize_failure(self.path, trt.__version__, [], str(built_with)))
        log: list[str] = []

        class _Recorder(trt.ILogger):  # type: ignore[misc]
            def log(self, severity: Any, msg: str) -> None:
                if severity <= trt.ILogger.Severity.WARNING:
                    log.append(msg)

        self._trt, self._torch = trt, torch
        self._runtime = trt.Runtime(_Recorder())
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(explain_deserialize_failure(self.path, trt.__version__, log, None))
        self._instances = InstancePool(self._new_instance, self.config.instance_count)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        specs = {n: self._spec(n) for n in names}
        inputs = tuple(specs[n] for n in names if is_input[n])
        outputs = tuple(specs[n] for n in names if not is_input[n])
        return Signature(inputs, outputs, batched=all(s.shape[:1] == (-1,) for s in inputs))

    def _new_instance(self) -> _Instance:
        context = self.engine.create_execution_context()
        if context is None:  # TensorRT answers None when the device memory for one more is not there
            raise ModelLoadError(f"{self.path}: no GPU memory for another execution context (instance_count)")
        return _Instance(context, self._torch.cuda.Stream())

    def _spec(self, name: str) -> TensorSpec:
        dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
        return TensorSpec(name, datatype_of(dtype), tuple(int(d) for d in self.engine.get_tensor_shape(name)))

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        if self._instances is None:
            raise InferenceFailed(f"{self.path} is not loaded")
        torch = self._torch
        with self._instances.lend() as instance, torch.cuda.stream(instance.stream):
            # Copies, allocations and the engine's work all go on this instance's stream, so instances
            # run side by side instead of queueing on the default stream.
            context, keep = instance.context, []
            for name, array in inputs.items():
                tensor = torch.from_numpy(np.require(array, requirements=["C", "W"])).cuda()
                keep.append(tensor)
                context.set_input_shape(name, tuple(array.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                if name in inputs:
                    continue
                dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
                shape = tuple(context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=_torch_dtype(torch, dtype), device="cuda")
                context.set_tensor_address(name, outputs[name].data_ptr())
            if not context.execute_async_v3(instance.stream.cuda_stream):
                raise InferenceFailed(f"TensorRT execution of {self.path} failed")
            instance.stream.synchronize()
            return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}

    def memory_bytes(self) -> int:
        if self.engine is None or self._instances is None:
            return 0
        # Every execution context holds the engine's activation memory of its own.
        return int(self.engine.device_memory_size) * self._instances.size + self.path.stat().st_size

    def unload(self) -> None:
        self.engine = self._instances = None


def _torch_dtype(torch: Any, dtype: np.dtype[Any]) -> Any:
    return torch.from_numpy(np.zeros(1, dtype=dtype)).dtype

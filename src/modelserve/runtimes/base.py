"""The contract every backend fulfils, kept small so that adding one is a single file."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.repository.config import ModelConfig, Platform
from modelserve.types import TensorSpec

Arrays = Mapping[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model file itself says about its tensors (full shapes, -1 where the file leaves it open).

    ``batched`` is True when every input's first dimension is open, which lets the server batch a
    model that has no config.yaml.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batched: bool


class Runtime(ABC):
    """One loaded model version. ``infer`` runs on a worker thread, never on the event loop.

    Implementations must be safe to call ``infer`` from several threads at once when the model's
    ``instance_count`` is above one.
    """

    def __init__(self, path: Path, config: ModelConfig) -> None:
        self.path = path
        self.config = config

    @abstractmethod
    def load(self) -> Signature | None:
        """Load the file; return what it says about its tensors, or None if it says nothing."""

    @abstractmethod
    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        """Run one (possibly batched) call: every input by name in, every output by name out."""

    @abstractmethod
    def memory_bytes(self) -> int:
        """What the loaded model occupies, as well as this backend can tell."""

    def unload(self) -> None:  # noqa: B027 - most backends free everything by dropping references
        """Release what ``load`` acquired."""


_MODULES = {
    Platform.ONNX: ("modelserve.runtimes.onnx", "OnnxRuntime"),
    Platform.TORCHSCRIPT: ("modelserve.runtimes.torch", "TorchScriptRuntime"),
    Platform.SKLEARN: ("modelserve.runtimes.sklearn", "SklearnRuntime"),
    Platform.TENSORRT: ("modelserve.runtimes.tensorrt", "TensorRTRuntime"),
    Platform.PYTHON: ("modelserve.runtimes.python", "PythonRuntime"),
    Platform.LLM: ("modelserve.generative.runtime", "GenerativeRuntime"),
}


def runtime_class(platform: Platform) -> type[Runtime]:
    """The backend for a platform, imported on first use so unused backends cost no memory."""
    module_name, class_name = _MODULES[platform]
    cls: type[Runtime] = getattr(importlib.import_module(module_name), class_name)
    return cls

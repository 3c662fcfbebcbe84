"""TorchScript models. torch is imported only when such a model loads: it costs hundreds of MB."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np

from modelserve.errors import InferenceFailed, ModelLoadError
from modelserve.runtimes.base import Arrays, Runtime, Signature


class TorchScriptRuntime(Runtime):
    """A ``torch.jit`` module called with the inputs in config order; it returns a tensor, a tuple
    or list of tensors (matched to the outputs in config order), or a dict of tensors by name."""

    module: Any = None
    _torch: Any = None

    def load(self) -> Signature | None:
        if not self.config.inputs or not self.config.outputs:
            raise ModelLoadError(
                f"{self.path.parent.parent / 'config.yaml'}: TorchScript files carry no tensor names or "
                "datatypes; declare inputs and outputs (name, datatype, dims) in config.yaml"
            )
        if not self.path.exists():
            raise ModelLoadError(f"model file not found: {self.path}")
        try:
            torch: Any = importlib.import_module("torch")
        except ImportError as exc:
            raise ModelLoadError("platform torchscript needs PyTorch: pip install 'modelserve[torch]'") from exc
        self._torch = torch
        device = str(self.config.parameters.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
        self._device = torch.device(device)
        try:
            with warnings.catch_warnings():
                # torch 2.13 deprecates TorchScript in favour of torch.export, yet serving existing
                # TorchScript files is exactly this runtime's job; the warning would only alarm operators.
                warnings.filterwarnings("ignore", r"`torch\.jit\.load` is", DeprecationWarning)
                self.module = torch.jit.load(str(self.path), map_location=self._device).eval()
        except Exception as exc:  # torch raises RuntimeError or pickle errors for any bad file
            raise ModelLoadError(f"{self.path}: not a loadable TorchScript file: {exc}") from exc
        self._input_names = [t.name for t in self.config.inputs]
        self._output_names = [t.name for t in self.config.outputs]
        return None

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        torch = self._torch
        # Binary inputs are read-only views of the request body; torch needs writable memory, so those copy.
        arrays = [np.require(inputs[n], requirements=["C", "W"]) for n in self._input_names]
        tensors = [torch.from_numpy(a).to(self._device) for a in arrays]
        with torch.inference_mode():
            result = self.module(*tensors)
        if isinstance(result, torch.Tensor):
            result = (result,)
        if isinstance(result, dict):
            missing = [n for n in self._output_names if n not in result]
            if missing:
                raise InferenceFailed(f"model returned no output named {', '.join(missing)}")
            return {n: result[n].detach().cpu().numpy() for n in self._output_names}
        if len(result) != len(self._output_names):
            raise InferenceFailed(
                f"model returned {len(result)} tensors but config.yaml declares {len(self._output_names)} outputs"
            )
        return {n: t.detach().cpu().numpy() for n, t in zip(self._output_names, result, strict=True)}

    def memory_bytes(self) -> int:
        if self.module is None:
            return 0
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def unload(self) -> None:
        self.module = None

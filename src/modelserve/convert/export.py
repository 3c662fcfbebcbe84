"""PyTorch → ONNX, with the first dimension of every input and output exported as a variable batch size,
so the server can batch the result."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

from modelserve.convert.source import ConversionError, Source, sample_inputs

OPSET = 17  # run by every onnxruntime the server supports; ONNX IR version 8


def export_onnx(source: Source, target: Path) -> Path:
    """Write ``source`` (a torch module) to ``target`` as ONNX and return ``target``."""
    torch: Any = importlib.import_module("torch")
    example = sample_inputs(source, 2, seed=0)  # two rows: a batch of one can be traced as a constant
    args = tuple(torch.from_numpy(example[spec.name]) for spec in source.inputs)
    batch = {0: "batch"}
    axes = {spec.name: batch for spec in source.inputs if spec.shape} | {name: batch for name in source.output_names}
    # The TorchScript-based exporter is deprecated in favour of torch.export, yet it takes ScriptModules,
    # which torch.export cannot, and writes one self-contained file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            torch.onnx.export(
                source.module,
                args,
                str(target),
                dynamo=False,
                opset_version=OPSET,
                input_names=[spec.name for spec in source.inputs],
                output_names=source.output_names,
                dynamic_axes=axes,
            )
        except Exception as exc:  # the exporter's errors name the operator it cannot export
            raise ConversionError(f"cannot export {source.description} to ONNX: {type(exc).__name__}: {exc}") from exc
    return target

"""ONNX Runtime's graph optimisations, applied once, offline, and saved with the model.

Level 0 keeps the graph as it is; 1 (basic) folds constants and removes redundant nodes using only
standard ONNX operators, so the file runs anywhere; 2 (extended) fuses into ONNX Runtime's own
operators; 3 (all) also changes memory layouts for this machine's CPU, and such a file may be slower
or refuse to run on another one. The server applies all levels again when it loads a model, so
offline optimisation mostly saves load time and makes what runs inspectable.
"""

from __future__ import annotations

from pathlib import Path

LEVELS = {0: "ORT_DISABLE_ALL", 1: "ORT_ENABLE_BASIC", 2: "ORT_ENABLE_EXTENDED", 3: "ORT_ENABLE_ALL"}


def optimize(model: Path, target: Path, level: int) -> Path:
    """Write ``model`` optimised at ``level`` (0..3) to ``target``; level 0 copies it."""
    import onnxruntime as ort

    if level not in LEVELS:
        raise ValueError(f"optimization level {level} is not one of 0..3")
    if level == 0:
        target.write_bytes(model.read_bytes())
        return target
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return target

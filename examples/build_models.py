"""Build the small, real models of the example model repository.

`make run` serves this repository and the tests drive it, so every runtime (ONNX, TorchScript,
scikit-learn) gets a genuine model file rather than a fake. Nothing is downloaded: each model is built
here from fixed seeds, checked by loading it back, and written only once it has passed. A model whose
file exists is skipped unless `--force` is given; config.yaml files are kept equal to the text below,
so this script is their single source.

    .venv/bin/python examples/build_models.py [REPO_DIR] [--force]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

DEFAULT_REPO = Path(__file__).resolve().parent / "model_repository"
OPSET = 17  # supported by every onnxruntime we run; opset 17 needs ONNX IR version 8.
IR_VERSION = 8

TINY_CNN_CONFIG = """\
# TorchScript files carry no tensor names or types, so this config is required.
platform: torchscript
max_batch_size: 32
inputs:
  - name: image
    datatype: FP32
    dims: [1, 8, 8]
outputs:
  - name: logits
    datatype: FP32
    dims: [10]
  - name: probabilities
    datatype: FP32
    dims: [10]
dynamic_batching:
  max_queue_delay_ms: 2
"""

SIMPLE_CONFIG = """\
# Triton's `simple` example: most tritonclient examples call it.
platform: onnx
max_batch_size: 8
inputs:
  - name: INPUT0
    datatype: INT32
    dims: [16]
  - name: INPUT1
    datatype: INT32
    dims: [16]
outputs:
  - name: OUTPUT0
    datatype: INT32
    dims: [16]
  - name: OUTPUT1
    datatype: INT32
    dims: [16]
"""


def _check(ok: bool, what: str) -> None:
    if not ok:  # not `assert`, which `python -O` strips
        raise RuntimeError(f"model check failed: {what}")


def _run_onnx(data: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds))


def build_mlp() -> bytes:
    """A 16 -> 32 -> 4 MLP exported to ONNX as input [batch, 16] -> output [batch, 4]."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    # The TorchScript-based exporter is deprecated, but it writes one self-contained file in 0.1 s, where
    # torch.export takes 2.5 s, prints its progress and moves the weights into a side .data file.
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exported = Path(scratch) / "model.onnx"
        torch.onnx.export(
            model,
            (torch.randn(2, 16),),
            exported,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
        data = exported.read_bytes()
    graph = onnx.load_model_from_string(data).graph
    for value, width in ((graph.input[0], 16), (graph.output[0], 4)):
        first, second = value.type.tensor_type.shape.dim
        _check(bool(first.dim_param) and second.dim_value == width, f"{value.name} is not [batch, {width}]")
    batch = torch.randn(5, 16)
    with torch.no_grad():
        expected = model(batch).numpy()
    (actual,) = _run_onnx(data, {"input": batch.numpy()})
    _check(np.allclose(actual, expected, rtol=0.0, atol=1e-5), "onnxruntime disagrees with torch")
    return data


def build_tiny_cnn() -> bytes:
    """A TorchScript CNN on [N, 1, 8, 8] images returning (logits, probabilities)."""
    import torch
    from torch import nn

    class TinyCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(256, 10)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.fc(torch.flatten(self.relu(self.conv(image)), 1))
            return logits, torch.softmax(logits, dim=1)

    torch.manual_seed(0)
    # Frozen weights: the saved model's outputs do not require grad, even when called outside no_grad.
    model = TinyCNN().eval().requires_grad_(False)
    buffer = io.BytesIO()
    # TorchScript is deprecated in torch, but it is the format Triton's pytorch backend serves.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))  # type: ignore[no-untyped-call]
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        logits, probabilities = loaded(images)
        expected, _ = model(images)
    _check(logits.shape == (3, 10) and probabilities.shape == (3, 10), "outputs are not [N, 10]")
    _check(torch.allclose(logits, expected), "the saved model disagrees with the eager one")
    _check(torch.allclose(probabilities.sum(1), torch.ones(3)), "probabilities do not sum to 1")
    return buffer.getvalue()


def build_iris() -> bytes:
    """A scikit-learn scaler + logistic regression pipeline trained on the bundled iris data."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True)
    pipeline = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))])
    pipeline.fit(features, labels)
    _check(pipeline.n_features_in_ == 4 and hasattr(pipeline, "predict_proba"), "not a 4-feature classifier")
    _check(pipeline.score(features, labels) > 0.9, "training accuracy below 0.9")
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    reloaded = joblib.load(io.BytesIO(buffer.getvalue()))
    _check(reloaded.predict_proba(features[:2]).shape == (2, 3), "the saved model does not reload")
    return buffer.getvalue()


def build_simple() -> bytes:
    """Triton's `simple` model: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, INT32 [batch, 16]."""

    def tensor(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", 16])

    add = helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"])
    sub = helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])
    outputs = [tensor("OUTPUT0"), tensor("OUTPUT1")]
    graph = helper.make_graph([add, sub], "simple", [tensor("INPUT0"), tensor("INPUT1")], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    left = np.arange(32, dtype=np.int32).reshape(2, 16)
    right = np.ones((2, 16), dtype=np.int32)
    total, difference = _run_onnx(data, {"INPUT0": left, "INPUT1": right})
    _check(np.array_equal(total, left + right) and np.array_equal(difference, left - right), "wrong sums")
    return data


class ModelSpec(NamedTuple):
    """One model: its folder, its file in version 1, how to build that file, and its config.yaml if any."""

    name: str
    filename: str
    build: Callable[[], bytes]
    config: str | None = None


MODELS = (
    ModelSpec("mlp", "model.onnx", build_mlp),
    ModelSpec("tiny_cnn", "model.pt", build_tiny_cnn, TINY_CNN_CONFIG),
    ModelSpec("iris", "model.joblib", build_iris),
    ModelSpec("simple", "model.onnx", build_simple, SIMPLE_CONFIG),
)


def _write_atomically(path: Path, data: bytes) -> None:
    # Write beside the target, then rename: no reader or interrupted build ever sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def build(repo_dir: Path, force: bool = False) -> None:
    """Build every model missing from `repo_dir` (every model with `force`), printing one line each."""
    for spec in MODELS:
        path = repo_dir / spec.name / "1" / spec.filename
        shown = path.relative_to(repo_dir).as_posix()
        if path.exists() and not force:
            line = f"skipped {shown} (exists; --force rebuilds)"
        else:
            started = time.perf_counter()
            _write_atomically(path, spec.build())
            line = f"built   {shown} in {time.perf_counter() - started:.2f} s"
        config = repo_dir / spec.name / "config.yaml"
        if spec.config is not None and (not config.is_file() or config.read_text() != spec.config):
            _write_atomically(config, spec.config.encode())  # this script is the config's single source
            line += ", wrote config.yaml"
        print(line)


def main() -> None:
    """Parse the command line and build the repository."""
    parser = argparse.ArgumentParser(description="Build the example model repository.")
    parser.add_argument("repo_dir", nargs="?", type=Path, default=DEFAULT_REPO, help="repository to fill")
    parser.add_argument("--force", action="store_true", help="rebuild models whose files already exist")
    args = parser.parse_args()
    build(args.repo_dir, force=args.force)


if __name__ == "__main__":
    main()

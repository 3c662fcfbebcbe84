"""Ensembles for the tests of platform ensemble, and the Python models their steps call.

``write_classifier`` writes Triton's classic pipeline: an image preprocessing Python model (HWC uint8 →
CHW float32, normalised), a small ResNet-style ONNX network and a top-k postprocessing Python model, and
the ensemble ``classify`` that chains them.
"""

from __future__ import annotations

from pathlib import Path

from tests.builders import resnet_onnx, write_config
from tests.python_models import write_python_model

SIZE = 16  # images are SIZE x SIZE x 3
CLASSES = 10
TOP_K = 3
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# A batch of HWC uint8 images → CHW float32, normalised by the mean and standard deviation of its parameters.
PREPROCESS = """import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.mean = np.array(json.loads(parameters["mean"]["string_value"]), dtype=np.float32)
        self.std = np.array(json.loads(parameters["std"]["string_value"]), dtype=np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            normalized = ((images / np.float32(255.0) - self.mean) / self.std).transpose(0, 3, 1, 2)
            tensor = pb_utils.Tensor("NORMALIZED", np.ascontiguousarray(normalized, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
"""
PREPROCESS_CONFIG = f"""backend: python
max_batch_size: 8
inputs:
  - {{name: IMAGE, datatype: UINT8, dims: [{SIZE}, {SIZE}, 3]}}
outputs:
  - {{name: NORMALIZED, datatype: FP32, dims: [3, {SIZE}, {SIZE}]}}
parameters:
  mean: "{list(MEAN)}"
  std: "{list(STD)}"
"""

# Logits → the k most probable classes and their softmax probabilities, most probable first.
POSTPROCESS = """import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.k = int(json.loads(args["model_config"])["parameters"]["k"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "LOGITS").as_numpy()
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
            classes = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.k]
            scores = np.take_along_axis(probabilities, classes, axis=1)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("CLASSES", classes.astype(np.int64)),
                        pb_utils.Tensor("SCORES", scores.astype(np.float32)),
                    ]
                )
            )
        return responses
"""
POSTPROCESS_CONFIG = f"""backend: python
max_batch_size: 8
inputs:
  - {{name: LOGITS, datatype: FP32, dims: [{CLASSES}]}}
outputs:
  - {{name: CLASSES, datatype: INT64, dims: [{TOP_K}]}}
  - {{name: SCORES, datatype: FP32, dims: [{TOP_K}]}}
parameters: {{k: "{TOP_K}"}}
"""

RESNET_CONFIG = f"""platform: onnx
max_batch_size: 8
instance_count: 1
inputs:
  - {{name: input, datatype: FP32, dims: [3, {SIZE}, {SIZE}]}}
outputs:
  - {{name: logits, datatype: FP32, dims: [{CLASSES}]}}
"""

# As Triton's docs write an ensemble's config.pbtxt, in config.yaml.
CLASSIFY_CONFIG = f"""name: classify
platform: ensemble
max_batch_size: 8
inputs:
  - {{name: IMAGE, datatype: UINT8, dims: [{SIZE}, {SIZE}, 3]}}
outputs:
  - {{name: CLASSES, datatype: INT64, dims: [{TOP_K}]}}
  - {{name: SCORES, datatype: FP32, dims: [{TOP_K}]}}
ensemble_scheduling:
  step:
    - model_name: preprocess
      model_version: -1
      input_map: {{IMAGE: IMAGE}}
      output_map: {{NORMALIZED: normalized_image}}
    - model_name: resnet
      model_version: -1
      input_map: {{input: normalized_image}}
      output_map: {{logits: logits}}
    - model_name: postprocess
      model_version: -1
      input_map: {{LOGITS: logits}}
      output_map: {{CLASSES: CLASSES, SCORES: SCORES}}
"""

# X FP32 [4] → Y, the same values; a negative value is refused with Triton's INVALID_ARG (a 400).
POSITIVE = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if (x < 0).any():
                error = pb_utils.TritonError("X must not be negative", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return responses
"""
POSITIVE_CONFIG = """backend: python
max_batch_size: 8
inputs:
  - {name: X, datatype: FP32, dims: [4]}
outputs:
  - {name: Y, datatype: FP32, dims: [4]}
"""


def ensemble_config(name: str, steps: str, *, inputs: str, outputs: str, max_batch_size: int = 8) -> str:
    """An ensemble's config.yaml: its tensors (YAML flow lists) and its steps (a YAML block, indented 4)."""
    return (
        f"name: {name}\nplatform: ensemble\nmax_batch_size: {max_batch_size}\ninputs: {inputs}\n"
        f"outputs: {outputs}\nensemble_scheduling:\n  step:\n{steps}"
    )


def write_classifier(repository: Path) -> None:
    """preprocess (Python) → resnet (ONNX) → postprocess (Python top-k), and the ensemble ``classify``, its
    version folder ``1/`` empty as Triton's are."""
    write_python_model(repository, "preprocess", PREPROCESS, PREPROCESS_CONFIG)
    resnet_onnx(repository / "resnet" / "1" / "model.onnx", classes=CLASSES)
    write_config(repository / "resnet", RESNET_CONFIG)
    write_python_model(repository, "postprocess", POSTPROCESS, POSTPROCESS_CONFIG)
    write_config(repository / "classify", CLASSIFY_CONFIG)
    (repository / "classify" / "1").mkdir()

"""``modelserve convert`` on real small models: every converted file is run again here, in ONNX Runtime,
against the torch model it came from, not only through the command's own report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from modelserve.cli import app
from modelserve.repository.config import ModelConfig
from tests.convert import models
from tests.protocol.serving import serving

MLP = ["tests.convert.models:mlp", "--input-shape", "1,16"]
CNN = ["tests.convert.models:cnn", "--input-shape", "1,3,16,16"]
FAST = ["--samples", "16", "--speed-runs", "3"]


def convert(*args: str, code: int = 0) -> Any:
    """Run the command with ``--json``; the report when it should succeed, the output when it should not."""
    result = CliRunner().invoke(app, ["convert", *args, *FAST, "--json"], env={"COLUMNS": "500"})
    assert result.exit_code == code, result.output
    return json.loads(result.stdout.splitlines()[-1]) if code == 0 else " ".join(result.output.split())


def agreement(model_file: Path, module: torch.nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
    """Max abs error and top-1 agreement of ``model_file`` against ``module`` on 64 fresh samples."""
    x = np.random.default_rng(7).standard_normal((64, *shape)).astype(np.float32)
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.inference_mode():
        expected = module.eval()(torch.from_numpy(x)).numpy()
    return float(np.abs(actual - expected).max()), float(np.mean(actual.argmax(1) == expected.argmax(1)))


def ops(model_file: Path) -> set[str]:
    """The operator types of a model's graph."""
    return {node.op_type for node in onnx.load(str(model_file)).graph.node}


@pytest.mark.parametrize(
    ("precision", "max_error", "min_top1"), [("fp32", 1e-5, 1.0), ("fp16", 5e-3, 0.95), ("int8", 0.1, 0.85)]
)
def test_a_torch_mlp_stays_accurate_in_every_precision(
    tmp_path: Path, precision: str, max_error: float, min_top1: float
) -> None:
    report = convert(*MLP, "--repository", str(tmp_path), "--precision", precision)
    model_file = tmp_path / f"models-{precision}" / "1" / "model.onnx"
    assert report["written"] == [str(model_file), str(tmp_path / f"models-{precision}" / "config.yaml")]
    error, top1 = agreement(model_file, models.mlp(), (16,))
    assert error <= max_error
    assert top1 >= min_top1
    assert report["max_abs_error"] <= max_error
    assert report["outputs"][0]["top1_agreement"] >= min_top1
    assert report["baseline_ms"] > 0
    assert report["converted_ms"] > 0
    if precision == "fp16":  # FP16 inside, FP32 at the edges: clients send what they sent before
        assert "Cast" in ops(model_file)
        assert ModelConfig.from_file(model_file.parent.parent / "config.yaml").inputs[0].datatype == "FP32"
    if precision == "int8":
        assert "DynamicQuantizeLinear" in ops(model_file) or "MatMulInteger" in ops(model_file)


def test_fp16_inputs_and_outputs_when_asked(tmp_path: Path) -> None:
    convert(*MLP, "--repository", str(tmp_path), "--precision", "fp16", "--fp16-io", "--name", "half")
    config = ModelConfig.from_file(tmp_path / "half" / "config.yaml")
    assert [t.datatype for t in (*config.inputs, *config.outputs)] == ["FP16", "FP16"]


def test_static_int8_calibrates_on_the_data_given(tmp_path: Path) -> None:
    data = tmp_path / "calibration.npz"
    np.savez(data, input=np.random.default_rng(0).standard_normal((32, 3, 16, 16)))
    report = convert(*CNN, "--repository", str(tmp_path), "--precision", "int8", "--calibration-data", str(data),
                     "--optimization-level", "0")  # fmt: skip
    model_file = tmp_path / "models-int8" / "1" / "model.onnx"
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(model_file)  # static: scales fixed in the graph
    error, top1 = agreement(model_file, models.cnn(), (3, 16, 16))
    assert error < 0.1
    assert top1 >= 0.85
    assert report["samples"] == 8  # the last 8 of 32 rows: calibrated on 24, measured on rows it never saw
    assert report["accuracy_on"] == "calibration rows held out of calibration"
    assert report["advice"] == []

    np.savez(data, image=np.zeros((4, 3, 16, 16)))
    output = convert(*CNN, "--repository", str(tmp_path), "--precision", "int8", "--calibration-data", str(data),
                     code=1)  # fmt: skip
    assert "calibration.npz has no array named 'input' (it has image)" in output
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 8, 8)))
    output = convert(*CNN, "--repository", str(tmp_path), "--precision", "int8",
                     "--calibration-data", str(tmp_path / "wrong.npy"), code=1)  # fmt: skip
    assert "'input' has shape [4, 3, 8, 8]; expected [samples, 3, 16, 16]" in output


def test_dynamic_int8_of_a_convolutional_network_points_to_static_int8(tmp_path: Path) -> None:
    report = convert(*CNN, "--repository", str(tmp_path), "--precision", "int8")
    [advice] = report["advice"]
    measured = float(advice.removeprefix("dynamic INT8 of a convolutional network ran at ").split("x FP32")[0])
    assert abs(measured - report["speedup"]) <= 0.01
    assert "--calibration-data" in advice
    assert convert(*MLP, "--repository", str(tmp_path), "--precision", "int8")["advice"] == []


def test_an_error_beyond_the_tolerance_is_refused_unless_forced(tmp_path: Path) -> None:
    output = convert(*MLP, "--repository", str(tmp_path), "--precision", "int8", "--tolerance", "1e-6", code=1)
    assert "exceeds --tolerance 1e-06; nothing written" in output
    assert not (tmp_path / "models-int8").exists()
    report = convert(*MLP, "--repository", str(tmp_path), "--precision", "int8", "--tolerance", "1e-6", "--force")
    assert report["max_abs_error"] > 1e-6
    assert (tmp_path / "models-int8" / "1" / "model.onnx").is_file()


def test_torchscript_files_and_repository_models_convert(built_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(built_repository, repository)
    script = repository / "tiny_cnn" / "1" / "model.pt"
    report = convert(str(script), "--input-shape", "1,1,8,8", "--output-name", "logits",
                     "--output-name", "probabilities", "--repository", str(repository))  # fmt: skip
    assert report["source"] == f"TorchScript file {script}"
    assert [o["name"] for o in report["outputs"]] == ["logits", "probabilities"]
    assert report["max_abs_error"] < 1e-4
    # By name, a repository model brings its tensor names and shapes from its config.yaml.
    report = convert("tiny_cnn", "--repository", str(repository), "--precision", "fp16")
    assert report["source"].startswith("model tiny_cnn version 1 of")
    assert (repository / "tiny_cnn-fp16" / "1" / "model.onnx").is_file()
    assert "tiny_cnn" in (repository / "tiny_cnn-fp16" / "config.yaml").read_text().splitlines()[0]
    # A converted ONNX version cannot join a TorchScript model: its config.yaml says another platform.
    refused = convert("mlp", "--repository", str(repository), "--name", "tiny_cnn", code=1)
    assert "tiny_cnn/config.yaml says platform torchscript; an onnx version cannot join it" in refused


def test_converted_models_are_served_with_their_generated_config(tmp_path: Path) -> None:
    convert(*MLP, "--repository", str(tmp_path), "--precision", "int8", "--name", "classifier")
    convert(*MLP, "--repository", str(tmp_path), "--precision", "int8", "--name", "classifier")  # version 2
    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 16], "data": x.ravel().tolist()}]}
    with serving(tmp_path) as client:
        assert client.get("/v2/models/classifier/versions/2/ready").status_code == 200
        answer = client.post("/v2/models/classifier/infer", json=body)
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        with torch.inference_mode():
            expected = models.mlp().eval()(torch.from_numpy(x)).numpy()
        assert output["shape"] == [2, 10]
        assert np.abs(np.array(output["data"]).reshape(2, 10) - expected).max() < 0.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.convert.models:mlp"], "give --input-shape for each input"),
        (["tests.convert.models:not_a_module", "--input-shape", "1,2"], "returned str, not a torch.nn.Module"),
        (["tests.convert.models:missing", "--input-shape", "1,2"], "cannot find tests.convert.models:missing"),
        (["nowhere.onnx"], "is neither a file"),
        ([*MLP, "--optimization-level", "4"], "--optimization-level 4: onnx takes 0..3"),
        (["tests.convert.models:mlp", "--input-shape", "1,a"], "--input-shape '1,a': give positive sizes"),
        ([*MLP, "--input-shape", "1,4"], "cannot run on inputs of shape [1, 16] and [1, 4]: TypeError"),
        (["tests.convert.models:mlp", "--input-shape", "1,15"], "cannot run on inputs of shape [1, 15]"),
    ],
)
def test_what_cannot_convert_says_what_to_change(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["convert", *args, "--repository", str(tmp_path)], env={"COLUMNS": "500"})
    assert result.exit_code != 0
    assert message in " ".join(result.output.split()), result.output


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine may build engines")
def test_tensorrt_without_tensorrt_or_a_gpu_names_what_is_missing(tmp_path: Path) -> None:
    output = convert(*MLP, "--output", str(tmp_path / "model.trt"), "--precision", "fp16", code=1)
    assert "--engine tensorrt needs the `tensorrt` Python package (pip install 'modelserve[gpu]')" in output
    assert not (tmp_path / "model.trt").exists()

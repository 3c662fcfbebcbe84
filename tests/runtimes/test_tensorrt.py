"""The TensorRT backend: its error messages and a missing package anywhere; its instances on a GPU host."""

from __future__ import annotations

import importlib.util
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modelserve.convert.precision import Precision
from modelserve.convert.source import InputSpec
from modelserve.convert.tensorrt import build_engine, missing
from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig, Platform
from modelserve.runtimes.base import runtime_class
from modelserve.runtimes.tensorrt import TensorRTRuntime, explain_deserialize_failure, rebuild_command
from tests.builders import scale_onnx

ROOT = Path(__file__).resolve().parents[2]
ENGINE = Path("/models/resnet/1/model.plan")
MISMATCH_LOG = (
    "The engine plan file is not compatible with this version of TensorRT, expecting library version 10.0.1.6 "
    "got 8.6.1.6, please rebuild."
)


def test_runtime_class_for_tensorrt() -> None:
    assert runtime_class(Platform.TENSORRT) is TensorRTRuntime


def test_version_mismatch_from_the_log() -> None:
    message = explain_deserialize_failure(ENGINE, "10.0.1.6", ["Loaded engine size: 12 MiB", MISMATCH_LOG], None)
    assert message.startswith(f"{ENGINE}: TensorRT version mismatch")
    assert "engine built with 8.6.1.6" in message
    assert "runtime is 10.0.1.6" in message
    assert rebuild_command(ENGINE) in message


def test_serialization_tag_mismatch_from_the_log() -> None:
    log = [
        "Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed.",
        "Current Version: 238, Serialized Engine Version: 236",
    ]
    message = explain_deserialize_failure(ENGINE, "10.0.1.6", log, None)
    assert "TensorRT version mismatch" in message
    assert "236" in message
    assert rebuild_command(ENGINE) in message


def test_version_recorded_in_the_config() -> None:
    message = explain_deserialize_failure(ENGINE, "10.3.0.26", [], "8.6.1.6")
    assert message.startswith(f"{ENGINE}: TensorRT version mismatch")
    assert "engine built with 8.6.1.6" in message
    assert "runtime is 10.3.0.26" in message
    assert rebuild_command(ENGINE) in message


@pytest.mark.parametrize(
    "log",
    [
        [],
        ["Serialization assertion magicTagRead == kMAGIC_TAG failed."],
        ["a", "b", "c", "Error Code 1: Serialization (Serialization assertion failed.)"],
    ],
)
def test_no_version_information(log: list[str]) -> None:
    message = explain_deserialize_failure(ENGINE, "10.0.1.6", log, None)
    assert message.startswith(f"{ENGINE}: engine deserialization failed - version mismatch or corrupted file")
    detail = "; ".join(log[-3:]) or "no detail from TensorRT"  # the last three lines of TensorRT's log
    assert message.endswith(f"({detail})")


def test_recorded_version_equal_to_the_runtime_is_not_a_mismatch() -> None:
    message = explain_deserialize_failure(ENGINE, "10.0.1.6", ["Serialization assertion failed."], "10.0.1.6")
    assert "deserialization failed - version mismatch or corrupted file" in message
    assert "Serialization assertion failed." in message


def test_rebuild_command_names_the_engine() -> None:
    command = rebuild_command(ENGINE)
    assert f"--saveEngine={ENGINE}" in shlex.split(command)


def test_rebuild_command_uses_the_tool_tensorrt_ships() -> None:
    """trtexec comes with every TensorRT install, so the operator has it wherever the engine would run."""
    words = shlex.split(rebuild_command(ENGINE))
    assert words[0] == "trtexec"
    assert "--onnx=<source.onnx>" in words


def test_missing_engine_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "resnet" / "1" / "model.plan"
    with pytest.raises(ModelLoadError) as caught:
        TensorRTRuntime(path, ModelConfig()).load()
    assert str(caught.value) == f"model file not found: {path}"


@pytest.mark.parametrize("filename", ["model.plan", "model.trt"])
def test_engine_without_the_tensorrt_package(tmp_path: Path, filename: str) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("the tensorrt package is installed; this checks the deployment without it")
    path = tmp_path / "resnet" / "1" / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ftrt" + bytes(64))
    runtime = TensorRTRuntime(path, ModelConfig(platform=Platform.TENSORRT))
    with pytest.raises(ModelLoadError) as caught:
        runtime.load()
    message = str(caught.value)
    assert message.startswith(f"{path}: platform tensorrt needs the `tensorrt` package")
    assert message.endswith("missing: tensorrt")
    assert "pip install 'modelserve[gpu,torch]'" in message
    assert runtime.memory_bytes() == 0


@pytest.mark.skipif(bool(missing()), reason=f"needs a GPU host: this one lacks {missing() or 'nothing'}")
def test_instances_run_side_by_side_each_on_its_own_context(tmp_path: Path) -> None:
    """Two instances, two threads calling at once with different batch sizes: with one shared context a
    call could run with the other's shapes or buffers; each answer must be its own input doubled."""
    onnx_path = scale_onnx(tmp_path / "scale.onnx", factor=2.0, features=64)
    engine = tmp_path / "scaled" / "1" / "model.plan"
    engine.parent.mkdir(parents=True)
    inputs = [InputSpec("x", "FP32", (8, 64))]
    build_engine(onnx_path, engine, inputs, precision=Precision.FP32, level=0, max_batch_size=16)
    runtime = TensorRTRuntime(engine, ModelConfig(platform=Platform.TENSORRT, instance_count=2))
    runtime.load()
    try:
        # Every execution context holds activation memory of its own: two instances, twice the engine's.
        assert runtime.memory_bytes() == 2 * runtime.engine.device_memory_size + engine.stat().st_size

        def calls(batch: int) -> list[bool]:
            rng = np.random.default_rng(batch)
            answers = []
            for _ in range(200):
                x = rng.standard_normal((batch, 64)).astype(np.float32)
                answers.append(bool(np.array_equal(runtime.infer({"x": x})["y"], x * 2)))
            return answers

        with ThreadPoolExecutor(2) as threads:
            results = list(threads.map(calls, [1, 16]))
        assert all(all(answers) for answers in results)
    finally:
        runtime.unload()

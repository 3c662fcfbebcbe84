"""The TorchScript backend on the example `tiny_cnn` and on small scripted modules built here."""

from __future__ import annotations

import gc
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelserve.errors import InferenceFailed, ModelLoadError
from modelserve.repository.config import ModelConfig, Platform, TensorConfig
from modelserve.runtimes.base import runtime_class
from modelserve.runtimes.torch import TorchScriptRuntime
from tests.builders import reference_inputs


def _tensor(name: str, dims: list[int], datatype: str = "FP32") -> TensorConfig:
    return TensorConfig(name=name, datatype=datatype, dims=dims)


class _Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _Named(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": a + b, "difference": a - b}


class _Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1, x - 1


def _script(module: torch.nn.Module, path: Path) -> Path:
    # TorchScript is deprecated in torch, but it is the format this runtime serves (as examples/build_models.py).
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def _reference(path: Path, *tensors: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        return module(*(torch.from_numpy(t) for t in tensors))


def _tiny_cnn(repository: Path) -> TorchScriptRuntime:
    source = repository / "tiny_cnn"
    return TorchScriptRuntime(source / "1" / "model.pt", ModelConfig.from_file(source / "config.yaml"))


def test_runtime_class_for_torchscript() -> None:
    assert runtime_class(Platform.TORCHSCRIPT) is TorchScriptRuntime


def test_tiny_cnn_loads_without_a_signature(built_repository: Path) -> None:
    """TorchScript files carry no tensor names or types: the spec comes from config.yaml alone."""
    runtime = _tiny_cnn(built_repository)
    assert runtime.load() is None
    assert runtime.memory_bytes() > 0


def test_tiny_cnn_infer_matches_torch(built_repository: Path) -> None:
    runtime = _tiny_cnn(built_repository)
    runtime.load()
    images = reference_inputs()["tiny_cnn"]
    result = runtime.infer({"image": images})
    logits, probabilities = _reference(runtime.path, images)
    assert list(result) == ["logits", "probabilities"]
    assert result["logits"].shape == (2, 10)
    assert result["logits"].dtype == np.float32
    np.testing.assert_allclose(result["logits"], logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["probabilities"], probabilities.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_memory_bytes_counts_parameters(built_repository: Path) -> None:
    runtime = _tiny_cnn(built_repository)
    runtime.load()
    conv, linear = 4 * 1 * 3 * 3 + 4, 256 * 10 + 10
    assert runtime.memory_bytes() == (conv + linear) * 4


def test_unload_releases_the_module(built_repository: Path) -> None:
    runtime = _tiny_cnn(built_repository)
    runtime.load()
    released = weakref.ref(runtime.module)
    runtime.unload()
    gc.collect()
    assert released() is None
    assert runtime.memory_bytes() == 0


def test_load_again_after_unload(built_repository: Path) -> None:
    runtime = _tiny_cnn(built_repository)
    runtime.load()
    images = reference_inputs()["tiny_cnn"]
    before = runtime.infer({"image": images})
    runtime.unload()
    runtime.load()
    np.testing.assert_array_equal(runtime.infer({"image": images})["logits"], before["logits"])


def test_single_tensor_output(tmp_path: Path) -> None:
    path = _script(_Doubler(), tmp_path / "1" / "model.pt")
    runtime = TorchScriptRuntime(path, ModelConfig(inputs=[_tensor("x", [3])], outputs=[_tensor("y", [3])]))
    runtime.load()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = runtime.infer({"x": x})
    assert list(result) == ["y"]
    np.testing.assert_array_equal(result["y"], x * 2)


def test_inputs_are_passed_in_config_order(tmp_path: Path) -> None:
    path = _script(_Named(), tmp_path / "1" / "model.pt")
    config = ModelConfig(
        inputs=[_tensor("a", [2], "INT64"), _tensor("b", [2], "INT64")],
        outputs=[_tensor("difference", [2], "INT64"), _tensor("total", [2], "INT64")],
    )
    runtime = TorchScriptRuntime(path, config)
    runtime.load()
    a, b = np.array([[10, 20]], dtype=np.int64), np.array([[1, 2]], dtype=np.int64)
    result = runtime.infer({"b": b, "a": a})  # request order must not matter
    assert list(result) == ["difference", "total"]
    np.testing.assert_array_equal(result["difference"], a - b)
    np.testing.assert_array_equal(result["total"], a + b)


def test_dict_output_missing_a_declared_name(tmp_path: Path) -> None:
    path = _script(_Named(), tmp_path / "1" / "model.pt")
    config = ModelConfig(
        inputs=[_tensor("a", [2]), _tensor("b", [2])],
        outputs=[_tensor("total", [2]), _tensor("ratio", [2])],
    )
    runtime = TorchScriptRuntime(path, config)
    runtime.load()
    x = np.ones((1, 2), dtype=np.float32)
    with pytest.raises(InferenceFailed, match="no output named ratio"):
        runtime.infer({"a": x, "b": x})


def test_tuple_output_count_differing_from_config(tmp_path: Path) -> None:
    path = _script(_Pair(), tmp_path / "1" / "model.pt")
    runtime = TorchScriptRuntime(path, ModelConfig(inputs=[_tensor("x", [2])], outputs=[_tensor("y", [2])]))
    runtime.load()
    with pytest.raises(InferenceFailed) as caught:
        runtime.infer({"x": np.zeros((1, 2), dtype=np.float32)})
    assert "returned 2 tensors but config.yaml declares 1 outputs" in str(caught.value)


def test_cpu_device_parameter(built_repository: Path) -> None:
    source = built_repository / "tiny_cnn"
    config = ModelConfig.from_file(source / "config.yaml").model_copy(update={"parameters": {"device": "cpu"}})
    runtime = TorchScriptRuntime(source / "1" / "model.pt", config)
    runtime.load()
    assert runtime.infer({"image": reference_inputs()["tiny_cnn"]})["logits"].shape == (2, 10)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig(inputs=[_tensor("image", [1, 8, 8])]),
        ModelConfig(outputs=[_tensor("logits", [10])]),
    ],
)
def test_config_must_declare_inputs_and_outputs(built_repository: Path, config: ModelConfig) -> None:
    with pytest.raises(ModelLoadError) as caught:
        TorchScriptRuntime(built_repository / "tiny_cnn" / "1" / "model.pt", config).load()
    message = str(caught.value)
    assert message.startswith(f"{built_repository / 'tiny_cnn' / 'config.yaml'}: ")
    assert "declare inputs and outputs" in message
    assert "config.yaml" in message


def test_missing_file_names_the_path(built_repository: Path, tmp_path: Path) -> None:
    config = ModelConfig.from_file(built_repository / "tiny_cnn" / "config.yaml")
    path = tmp_path / "tiny_cnn" / "2" / "model.pt"
    with pytest.raises(ModelLoadError) as caught:
        TorchScriptRuntime(path, config).load()
    assert str(caught.value) == f"model file not found: {path}"


@pytest.mark.parametrize("data", [b"not a zip archive" * 8, b"PK\x03\x04 truncated"])
def test_corrupt_file_names_the_path(built_repository: Path, tmp_path: Path, data: bytes) -> None:
    config = ModelConfig.from_file(built_repository / "tiny_cnn" / "config.yaml")
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError) as caught:
        TorchScriptRuntime(path, config).load()
    assert str(caught.value).startswith(f"{path}: not a loadable TorchScript file")


def test_memory_bytes_before_load_is_zero(built_repository: Path) -> None:
    assert _tiny_cnn(built_repository).memory_bytes() == 0

"""The ONNX Runtime backend, on real models: the example repository's and small ones built here."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig, Platform
from modelserve.runtimes.base import Signature, runtime_class
from modelserve.runtimes.onnx import OnnxRuntime, choose_providers
from modelserve.types import TensorSpec
from tests.builders import add_sub_onnx, reference_inputs, scale_onnx


def _identity_onnx(path: Path, kind: int, dims: list[int | str], opset: int = 17) -> Path:
    """``out = Identity(data)`` for a tensor type the shared builders do not cover."""
    x = helper.make_tensor_value_info("data", kind, dims)
    y = helper.make_tensor_value_info("out", kind, dims)
    graph = helper.make_graph([helper.make_node("Identity", ["data"], ["out"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10 if opset > 17 else 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def _loaded(path: Path, config: ModelConfig | None = None) -> tuple[OnnxRuntime, Signature]:
    runtime = OnnxRuntime(path, config or ModelConfig())
    return runtime, runtime.load()


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture
def mlp(built_repository: Path) -> Iterator[OnnxRuntime]:
    runtime, _ = _loaded(built_repository / "mlp" / "1" / "model.onnx")
    yield runtime
    runtime.unload()


def test_runtime_class_for_onnx() -> None:
    assert runtime_class(Platform.ONNX) is OnnxRuntime


def test_mlp_signature(built_repository: Path) -> None:
    _, signature = _loaded(built_repository / "mlp" / "1" / "model.onnx")
    assert signature == Signature(
        inputs=(TensorSpec("input", "FP32", (-1, 16)),),
        outputs=(TensorSpec("output", "FP32", (-1, 4)),),
        batched=True,
    )


def test_simple_signature(built_repository: Path) -> None:
    _, signature = _loaded(built_repository / "simple" / "1" / "model.onnx")
    assert signature.inputs == (TensorSpec("INPUT0", "INT32", (-1, 16)), TensorSpec("INPUT1", "INT32", (-1, 16)))
    assert signature.outputs == (TensorSpec("OUTPUT0", "INT32", (-1, 16)), TensorSpec("OUTPUT1", "INT32", (-1, 16)))
    assert signature.batched


def test_every_symbolic_dim_is_minus_one(tmp_path: Path) -> None:
    _, signature = _loaded(add_sub_onnx(tmp_path / "model.onnx", datatype="FP64", dims=("batch", "width", 3)))
    assert signature.inputs[0] == TensorSpec("INPUT0", "FP64", (-1, -1, 3))
    assert signature.batched


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_first_dim_is_not_batched(tmp_path: Path, batch: int) -> None:
    _, signature = _loaded(scale_onnx(tmp_path / "model.onnx", batch=batch, features=3))
    assert signature.inputs == (TensorSpec("x", "FP32", (batch, 3)),)
    assert not signature.batched


def test_unnamed_dims_are_minus_one(tmp_path: Path) -> None:
    """An ONNX dim with neither a value nor a name is as open as a symbolic one."""
    _, signature = _loaded(_identity_onnx(tmp_path / "model.onnx", TensorProto.INT64, [None, 2]))  # type: ignore[list-item]
    assert signature.inputs == (TensorSpec("data", "INT64", (-1, 2)),)
    assert signature.batched


@pytest.mark.parametrize(
    ("kind", "datatype"),
    [
        (TensorProto.BOOL, "BOOL"),
        (TensorProto.UINT8, "UINT8"),
        (TensorProto.INT8, "INT8"),
        (TensorProto.INT16, "INT16"),
        (TensorProto.INT64, "INT64"),
        (TensorProto.FLOAT16, "FP16"),
        (TensorProto.DOUBLE, "FP64"),
        (TensorProto.STRING, "BYTES"),
    ],
)
def test_datatypes(tmp_path: Path, kind: int, datatype: str) -> None:
    _, signature = _loaded(_identity_onnx(tmp_path / "model.onnx", kind, ["n"]))
    assert signature.inputs == (TensorSpec("data", datatype, (-1,)),)
    assert signature.outputs == (TensorSpec("out", datatype, (-1,)),)


def test_unservable_tensor_type_names_the_tensor(tmp_path: Path) -> None:
    path = _identity_onnx(tmp_path / "model.onnx", TensorProto.BFLOAT16, ["n"], opset=21)
    with pytest.raises(ModelLoadError) as caught:
        OnnxRuntime(path, ModelConfig()).load()
    assert "tensor 'data'" in str(caught.value)
    assert "bfloat16" in str(caught.value)


def test_mlp_infer_matches_onnxruntime(mlp: OnnxRuntime) -> None:
    batch = reference_inputs()["mlp"]
    result = mlp.infer({"input": batch})
    expected = _reference(mlp.path, {"input": batch})
    assert list(result) == ["output"]
    assert result["output"].shape == (3, 4)
    assert result["output"].dtype == np.float32
    np.testing.assert_allclose(result["output"], expected["output"], rtol=1e-6, atol=1e-6)


def test_simple_infer_adds_and_subtracts(built_repository: Path) -> None:
    runtime, _ = _loaded(built_repository / "simple" / "1" / "model.onnx")
    left = reference_inputs()["simple"]
    right = reference_inputs(seed=1)["simple"]
    result = runtime.infer({"INPUT0": left, "INPUT1": right})
    assert set(result) == {"OUTPUT0", "OUTPUT1"}
    np.testing.assert_array_equal(result["OUTPUT0"], left + right)
    np.testing.assert_array_equal(result["OUTPUT1"], left - right)


def test_scale_infer(tmp_path: Path) -> None:
    runtime, _ = _loaded(scale_onnx(tmp_path / "model.onnx", factor=3.0))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(runtime.infer({"x": x})["y"], x * 3.0)


def test_string_inputs_accept_bytes(tmp_path: Path) -> None:
    runtime, _ = _loaded(_identity_onnx(tmp_path / "model.onnx", TensorProto.STRING, ["n"]))
    result = runtime.infer({"data": np.array([b"hello", "w\u00f6rld".encode()], dtype=object)})
    assert result["out"].tolist() == ["hello", "w\u00f6rld"]


def test_infer_from_several_threads_at_once(mlp: OnnxRuntime, executor: ThreadPoolExecutor) -> None:
    batches = [reference_inputs(seed)["mlp"] for seed in range(8)]
    expected = [_reference(mlp.path, {"input": b})["output"] for b in batches]
    results = list(executor.map(lambda b: mlp.infer({"input": b})["output"], batches))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_memory_bytes_after_load(mlp: OnnxRuntime) -> None:
    assert mlp.memory_bytes() > 0


def test_providers_are_the_chosen_ones(mlp: OnnxRuntime) -> None:
    assert mlp.providers == choose_providers(ort.get_available_providers())
    assert mlp.providers[-1] == "CPUExecutionProvider"


def test_thread_parameters_are_accepted(built_repository: Path) -> None:
    config = ModelConfig(parameters={"intra_op_num_threads": 1, "inter_op_num_threads": "1"})
    runtime, signature = _loaded(built_repository / "mlp" / "1" / "model.onnx", config)
    assert signature.batched
    assert runtime.infer({"input": reference_inputs()["mlp"]})["output"].shape == (3, 4)


def test_unload_releases_the_session(built_repository: Path) -> None:
    runtime, _ = _loaded(built_repository / "mlp" / "1" / "model.onnx")
    assert runtime.session is not None
    released = weakref.ref(runtime.session)
    runtime.unload()
    gc.collect()
    assert released() is None
    assert runtime.providers == []


def test_load_again_after_unload(mlp: OnnxRuntime) -> None:
    batch = reference_inputs()["mlp"]
    before = mlp.infer({"input": batch})["output"]
    mlp.unload()
    assert mlp.load().batched
    np.testing.assert_array_equal(mlp.infer({"input": batch})["output"], before)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "m" / "1" / "model.onnx"
    with pytest.raises(ModelLoadError) as caught:
        OnnxRuntime(path, ModelConfig()).load()
    assert str(caught.value) == f"model file not found: {path}"


@pytest.mark.parametrize("data", [b"this is not an onnx graph" * 10, b""])
def test_corrupt_file_names_the_path(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError) as caught:
        OnnxRuntime(path, ModelConfig()).load()
    assert str(caught.value).startswith(f"{path}: not a loadable ONNX model")


def test_truncated_file_names_the_path(built_repository: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    data = (built_repository / "mlp" / "1" / "model.onnx").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model") as caught:
        OnnxRuntime(path, ModelConfig()).load()
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        (
            ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["CPUExecutionProvider", "CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (["TensorrtExecutionProvider", "CPUExecutionProvider"], ["TensorrtExecutionProvider", "CPUExecutionProvider"]),
        (["OpenVINOExecutionProvider"], []),
        ([], []),
    ],
)
def test_choose_providers_keeps_preference_order(available: list[str], chosen: list[str]) -> None:
    assert choose_providers(available) == chosen

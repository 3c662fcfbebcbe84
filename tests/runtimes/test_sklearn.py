"""The scikit-learn backend on the example `iris` pipeline and on small estimators trained here."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelserve.errors import ModelLoadError
from modelserve.models.spec import BatchingDefaults, resolve
from modelserve.repository.config import ModelConfig, Platform, TensorConfig
from modelserve.runtimes.base import Signature, runtime_class
from modelserve.runtimes.sklearn import SklearnRuntime
from modelserve.types import TensorSpec
from tests.builders import reference_inputs


def _tensor(name: str, dims: list[int], datatype: str = "FP64") -> TensorConfig:
    return TensorConfig(name=name, datatype=datatype, dims=dims)


def _iris(repository: Path, config: ModelConfig | None = None) -> SklearnRuntime:
    return SklearnRuntime(repository / "iris" / "1" / "model.joblib", config or ModelConfig())


def _dump(estimator: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, path)
    return path


def _regressor(path: Path) -> Path:
    features = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    return _dump(LinearRegression().fit(features, features @ np.array([2.0, -1.0]) + 0.5), path)


def test_runtime_class_for_sklearn() -> None:
    assert runtime_class(Platform.SKLEARN) is SklearnRuntime


def test_iris_signature(built_repository: Path) -> None:
    assert _iris(built_repository).load() == Signature(
        inputs=(TensorSpec("input", "FP64", (-1, 4)),),
        outputs=(TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP64", (-1, 3))),
        batched=True,
    )


def test_iris_infer_matches_joblib(built_repository: Path) -> None:
    runtime = _iris(built_repository)
    runtime.load()
    flowers = reference_inputs()["iris"]
    result = runtime.infer({"input": flowers})
    estimator = joblib.load(runtime.path)
    assert list(result) == ["predict", "predict_proba"]
    np.testing.assert_array_equal(result["predict"], estimator.predict(flowers))
    np.testing.assert_allclose(result["predict_proba"], estimator.predict_proba(flowers))
    assert result["predict"].tolist() == [0, 2]  # a setosa and a virginica
    assert result["predict_proba"].shape == (2, 3)


def test_config_outputs_choose_the_methods(built_repository: Path) -> None:
    runtime = _iris(built_repository, ModelConfig(outputs=[_tensor("predict_proba", [3])]))
    runtime.load()
    result = runtime.infer({"input": reference_inputs()["iris"]})
    assert list(result) == ["predict_proba"]
    np.testing.assert_allclose(result["predict_proba"].sum(axis=1), 1.0)


def test_config_input_name_is_used(built_repository: Path) -> None:
    """A config.yaml that names the input must load end to end and be fed under that name."""
    config = ModelConfig(inputs=[_tensor("features", [4])], outputs=[_tensor("predict", [], "INT64")])
    runtime = _iris(built_repository, config)
    signature = runtime.load()
    assert [spec.name for spec in signature.inputs] == ["features"]
    model_file = runtime.path
    spec = resolve("iris", 1, Platform.SKLEARN, config, signature, BatchingDefaults(), model_file)
    assert spec.inputs == (TensorSpec("features", "FP64", (-1, 4)),)
    result = runtime.infer({"features": reference_inputs()["iris"]})
    assert result["predict"].tolist() == [0, 2]


@pytest.mark.parametrize("output", ["explain", "decision_function", "transform"])
def test_outputs_that_are_not_methods_are_refused(built_repository: Path, output: str) -> None:
    runtime = _iris(built_repository, ModelConfig(outputs=[_tensor("predict", []), _tensor(output, [3])]))
    with pytest.raises(ModelLoadError) as caught:
        runtime.load()
    message = str(caught.value)
    assert message.startswith(f"{runtime.path}: outputs {output} are not methods")
    assert "(predict, predict_proba)" in message


def test_regressor_has_only_predict(tmp_path: Path) -> None:
    runtime = SklearnRuntime(_regressor(tmp_path / "model.joblib"), ModelConfig())
    signature = runtime.load()
    assert signature.inputs == (TensorSpec("input", "FP64", (-1, 2)),)
    assert signature.outputs == (TensorSpec("predict", "FP64", (-1,)),)
    result = runtime.infer({"input": np.array([[1.0, 1.0], [4.0, 0.0]])})
    np.testing.assert_allclose(result["predict"], [1.5, 8.5])


def test_predict_proba_of_a_regressor_is_refused(tmp_path: Path) -> None:
    runtime = SklearnRuntime(
        _regressor(tmp_path / "model.joblib"), ModelConfig(outputs=[_tensor("predict_proba", [2])])
    )
    with pytest.raises(ModelLoadError) as caught:
        runtime.load()
    assert "outputs predict_proba are not methods of LinearRegression" in str(caught.value)
    assert "(predict)" in str(caught.value)


def test_string_labels_are_bytes(tmp_path: Path) -> None:
    features = np.array([[0.0], [0.2], [0.9], [1.0]])
    labels = np.array(["cat", "cat", "dog", "dog"])
    path = _dump(LogisticRegression().fit(features, labels), tmp_path / "model.joblib")
    runtime = SklearnRuntime(path, ModelConfig())
    signature = runtime.load()
    assert signature.outputs == (TensorSpec("predict", "BYTES", (-1,)), TensorSpec("predict_proba", "FP64", (-1, 2)))
    assert runtime.infer({"input": np.array([[0.0], [1.0]])})["predict"].tolist() == ["cat", "dog"]


def test_memory_bytes_after_load(built_repository: Path) -> None:
    runtime = _iris(built_repository)
    runtime.load()
    assert runtime.memory_bytes() > 0


def test_unload_releases_the_estimator(built_repository: Path) -> None:
    runtime = _iris(built_repository)
    runtime.load()
    released = weakref.ref(runtime.estimator)
    runtime.unload()
    gc.collect()
    assert released() is None


def test_load_again_after_unload(built_repository: Path) -> None:
    runtime = _iris(built_repository)
    runtime.load()
    runtime.unload()
    runtime.load()
    assert runtime.infer({"input": reference_inputs()["iris"]})["predict"].tolist() == [0, 2]


def test_object_without_predict_is_refused(tmp_path: Path) -> None:
    path = _dump({"weights": [1, 2, 3]}, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError) as caught:
        SklearnRuntime(path, ModelConfig()).load()
    assert str(caught.value) == f"{path}: dict has no predict method"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "iris" / "1" / "model.joblib"
    with pytest.raises(ModelLoadError) as caught:
        SklearnRuntime(path, ModelConfig()).load()
    assert str(caught.value) == f"model file not found: {path}"


@pytest.mark.parametrize("data", [b"this is not a pickle" * 4, b"", b"\x80\x04\x95"])
def test_corrupt_file_names_the_path(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError) as caught:
        SklearnRuntime(path, ModelConfig()).load()
    assert str(caught.value).startswith(f"{path}: not a loadable joblib file")

"""The runbooks' API in-process: /v1/predict, /v1 load and unload, GET /health and GET /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import pytest

import modelserve
from tests.builders import reference_inputs
from tests.protocol.serving import TestClient, metric_value, metrics_of, serving

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def _predict(client: TestClient, model: str, inputs: Any, **extra: Any) -> httpx.Response:
    response: httpx.Response = client.post("/v1/predict", json={"model": model, "inputs": inputs, **extra})
    return response


# -- /v1/predict -------------------------------------------------------------------------------------


@pytest.mark.parametrize("inputs", [IRIS_ROWS, {"input": IRIS_ROWS}], ids=["plain-list", "by-input-name"])
def test_predict_iris(client: TestClient, inputs: Any) -> None:
    response = _predict(client, "iris", inputs)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("iris", "1")
    assert body["outputs"]["predict"] == [0, 2]
    probabilities = np.array(body["outputs"]["predict_proba"])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0])
    assert probabilities.argmax(axis=1).tolist() == [0, 2]
    assert body["latency_ms"] >= 0


def test_predict_with_two_inputs_by_name(client: TestClient) -> None:
    left = np.arange(32, dtype=np.int32).reshape(2, 16)
    right = np.full((2, 16), 5, dtype=np.int32)

    response = _predict(client, "simple", {"INPUT0": left.tolist(), "INPUT1": right.tolist()})

    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["OUTPUT0"] == (left + right).tolist()
    assert outputs["OUTPUT1"] == (left - right).tolist()


def test_predict_mlp_matches_onnxruntime(client: TestClient, built_repository: Path) -> None:
    batch = reference_inputs()["mlp"]
    session = onnxruntime.InferenceSession(
        str(built_repository / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(None, {"input": batch})

    response = _predict(client, "mlp", batch.tolist(), version="1")

    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"]["output"], expected, rtol=1e-6, atol=1e-6)


def test_predict_plain_list_on_a_two_input_model_says_to_name_them(client: TestClient) -> None:
    response = _predict(client, "simple", [[1] * 16])

    assert response.status_code == 400
    message = response.json()["error"]
    assert "INPUT0" in message
    assert "INPUT1" in message
    assert "by name" in message
    assert _predict(client, "simple", {"INPUT0": [[1] * 16], "INPUT1": [[1] * 16]}).status_code == 200


# -- /health and /metrics ----------------------------------------------------------------------------


def test_health_lists_the_loaded_models(client: TestClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["models_loaded"] == ["iris", "mlp", "simple", "tiny_cnn"]
    assert body["models_failed"] == {}
    assert body["uptime_seconds"] >= 0
    assert body["version"] == modelserve.__version__


def test_metrics_count_requests_by_outcome(client: TestClient) -> None:
    before = metrics_of(client)
    good = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": IRIS_ROWS[0]}]}
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROWS[0]}]}

    assert client.post("/v2/models/iris/infer", json=good).status_code == 200
    assert client.post("/v2/models/iris/infer", json=bad).status_code == 400
    assert _predict(client, "iris", IRIS_ROWS).status_code == 200
    assert _predict(client, "no_such_model", IRIS_ROWS).status_code == 404
    after = metrics_of(client)

    def grew(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    total = "model_serving_requests_total"
    assert grew(total, model="iris", protocol="http", status="success", code="200", version="1") == 1
    assert grew(total, model="iris", protocol="http", status="error", code="400") == 1
    assert grew(total, model="iris", protocol="http_v1", status="success", code="200", version="1") == 1
    assert grew(total, model="unknown", protocol="http_v1", status="error", code="404") == 1
    duration = "model_serving_request_duration_seconds_count"
    assert grew(duration, model="iris", protocol="http") == 2
    assert grew(duration, model="iris", protocol="http_v1") == 1
    assert grew("model_serving_batch_size_count", model="iris") == 2  # one batch per successful request
    assert grew("model_serving_batch_size_sum", model="iris") == 1 + 2
    assert grew("model_serving_queue_duration_seconds_count", model="iris") == 2
    assert grew("model_serving_inference_duration_seconds_count", model="iris") == 2
    assert grew("model_serving_inference_duration_seconds_sum", model="iris") > 0
    rejected = "model_serving_rejected_requests_total"
    assert grew(rejected, model="iris", reason="invalid_input") == 1
    assert grew(rejected, model="unknown", reason="model_not_found") == 1
    assert metric_value(after, "model_serving_models_loaded") == 4
    for model in ("iris", "mlp", "simple", "tiny_cnn"):
        assert metric_value(after, "model_serving_model_load_duration_seconds_count", model=model) == 1
        assert metric_value(after, "model_serving_model_memory_bytes", model=model, version="1") > 0
        assert metric_value(after, "model_serving_queue_depth", model=model, version="1") == 0
        assert metric_value(after, "model_serving_requests_in_flight", model=model, version="1") == 0
    assert metric_value(after, "model_serving_model_load_failures_total") == 0


# -- /v1 load and unload -----------------------------------------------------------------------------


def test_load_and_unload_lifecycle(example_repository: Path) -> None:
    with serving(example_repository, load_models=["simple"]) as client:
        assert _predict(client, "mlp", [[0.0] * 16]).status_code == 503

        loaded = client.post("/v1/models/mlp/load", params={"model_format": "onnx"})

        assert loaded.status_code == 200, loaded.text
        body = loaded.json()
        assert {k: body[k] for k in ("model", "format", "status")} == {
            "model": "mlp",
            "format": "onnx",
            "status": "loaded",
        }
        assert isinstance(body["load_time_seconds"], float)
        assert body["load_time_seconds"] >= 0
        assert body["versions"] == ["1"]
        assert _predict(client, "mlp", [[0.0] * 16]).status_code == 200
        assert "mlp" in client.get("/health").json()["models_loaded"]

        unloaded = client.post("/v1/models/mlp/unload")

        assert unloaded.status_code == 200, unloaded.text
        assert unloaded.json() == {"model": "mlp", "status": "unloaded"}
        refused = _predict(client, "mlp", [[0.0] * 16])
        assert refused.status_code == 503
        assert "not loaded" in refused.json()["error"]
        assert "mlp" not in client.get("/health").json()["models_loaded"]
        assert client.post("/v1/models/mlp/load").status_code == 200
        assert _predict(client, "mlp", [[0.0] * 16]).status_code == 200


def test_load_with_the_wrong_model_format_names_both(client: TestClient) -> None:
    response = client.post("/v1/models/iris/load", params={"model_format": "onnx"})

    assert response.status_code == 400
    message = response.json()["error"]
    assert "sklearn" in message
    assert "onnx" in message
    assert "model_format=sklearn" in message
    assert _predict(client, "iris", IRIS_ROWS).status_code == 200


def test_load_with_an_invalid_model_format_lists_the_valid_ones(client: TestClient) -> None:
    response = client.post("/v1/models/mlp/load", params={"model_format": "pytorch"})

    assert response.status_code == 400
    message = response.json()["error"]
    assert "model_format" in message
    for valid in ("onnx", "torchscript", "sklearn", "tensorrt"):
        assert valid in message


def test_load_of_an_unknown_model_is_404(client: TestClient) -> None:
    for path in ("/v1/models/no_such_model/load", "/v1/models/no_such_model/load?model_format=onnx"):
        response = client.post(path)

        assert response.status_code == 404
        assert "no_such_model" in response.json()["error"]


def test_health_does_not_depend_on_the_repository_storage(example_repository: Path) -> None:
    """A probe answers from memory: storage that vanishes (an unmounted volume, a store outage) is not
    a reason to fail it while the loaded models keep serving."""
    with serving(example_repository, load_models=["mlp"]) as client:
        example_repository.rename(example_repository.with_name("unmounted"))
        response = client.get("/health")
        assert response.status_code == 200
        assert response.json()["models_loaded"] == ["mlp"]
        assert client.post("/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]}).status_code == 200

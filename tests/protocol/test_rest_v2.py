"""The Open Inference Protocol over HTTP, in-process: health, metadata, configuration, inference in JSON
and binary, and statistics, against the real example models."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import pytest
import tritonclient.http as triton

import modelserve
from modelserve.cpus import available_cpus
from modelserve.types import datatype_of
from tests.builders import reference_inputs
from tests.protocol.serving import HEADER_LENGTH, TestClient, split_response

EXAMPLE_MODELS = ["iris", "mlp", "simple", "tiny_cnn"]


def _tensors(**arrays: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"name": n, "datatype": datatype_of(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}
        for n, a in arrays.items()
    ]


def _simple_pair(batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    left = np.arange(batch * 16, dtype=np.int32).reshape(batch, 16)
    return left, np.full((batch, 16), 3, dtype=np.int32)


def _binary_infer(client: TestClient, path: str, inputs: list[triton.InferInput], **kwargs: Any) -> httpx.Response:
    body, length = triton.InferenceServerClient.generate_request_body(inputs, **kwargs)
    headers = {} if length is None else {HEADER_LENGTH: str(length)}
    response: httpx.Response = client.post(path, content=body, headers=headers)
    return response


def _triton_input(name: str, array: np.ndarray, *, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype_of(array.dtype))
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _header_length(response: httpx.Response) -> int | None:
    value = response.headers.get(HEADER_LENGTH)
    return None if value is None else int(value)


# -- health and metadata -----------------------------------------------------------------------------


def test_live_and_ready(client: TestClient) -> None:
    live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")

    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_server_metadata_lists_the_extensions(client: TestClient) -> None:
    response = client.get("/v2")

    assert response.status_code == 200
    document = response.json()
    assert document["name"] == "modelserve"
    assert document["version"] == modelserve.__version__
    assert {"binary_tensor_data", "statistics", "model_repository", "model_configuration"} <= set(
        document["extensions"]
    )


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
def test_every_example_model_is_ready(client: TestClient, model: str) -> None:
    response = client.get(f"/v2/models/{model}/ready")

    assert response.status_code == 200, response.text
    assert response.json() == {"name": model, "ready": True}
    assert client.get(f"/v2/models/{model}/versions/1/ready").status_code == 200


EXPECTED_METADATA = {
    "simple": (
        "onnxruntime_onnx",
        [
            {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
            {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]},
        ],
        [
            {"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]},
            {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 16]},
        ],
    ),
    "mlp": (
        "onnxruntime_onnx",
        [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
        [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}],
    ),
    "iris": (
        "sklearn",
        [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    ),
    "tiny_cnn": (
        "pytorch_libtorch",
        [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
    ),
}


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
@pytest.mark.parametrize("version_path", ["", "/versions/1"], ids=["newest", "version-1"])
def test_model_metadata(client: TestClient, model: str, version_path: str) -> None:
    platform, inputs, outputs = EXPECTED_METADATA[model]

    response = client.get(f"/v2/models/{model}{version_path}")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": model,
        "versions": ["1"],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }


@pytest.mark.parametrize("version_path", ["", "/versions/1"], ids=["newest", "version-1"])
def test_model_config_is_tritons_json(client: TestClient, version_path: str) -> None:
    response = client.get(f"/v2/models/simple{version_path}/config")

    assert response.status_code == 200
    config = response.json()
    assert config["name"] == "simple"
    assert (config["platform"], config["backend"]) == ("onnxruntime_onnx", "onnxruntime")
    assert config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("OUTPUT0", "TYPE_INT32", [16]),
        ("OUTPUT1", "TYPE_INT32", [16]),
    ]
    assert config["version_policy"] == {"specific": {"versions": [1]}}
    assert config["instance_group"][0]["count"] == available_cpus()  # the effective count: one per CPU
    assert "dynamic_batching" in config


def test_model_config_drops_only_the_batch_dimension(client: TestClient) -> None:
    iris = client.get("/v2/models/iris/config").json()

    assert iris["max_batch_size"] > 0
    assert [(t["name"], t["data_type"], t["dims"]) for t in iris["input"]] == [("input", "TYPE_FP64", [4])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in iris["output"]] == [
        ("predict", "TYPE_INT64", []),
        ("predict_proba", "TYPE_FP64", [3]),
    ]


# -- inference ---------------------------------------------------------------------------------------


def test_json_inference_on_simple(client: TestClient) -> None:
    left, right = _simple_pair()

    response = client.post(
        "/v2/models/simple/infer", json={"id": "call-1", "inputs": _tensors(INPUT0=left, INPUT1=right)}
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert HEADER_LENGTH.lower() not in response.headers
    header, outputs = split_response(response.content, None)
    assert (header["model_name"], header["model_version"], header["id"]) == ("simple", "1", "call-1")
    assert [(o["name"], o["datatype"], o["shape"]) for o in header["outputs"]] == [
        ("OUTPUT0", "INT32", [2, 16]),
        ("OUTPUT1", "INT32", [2, 16]),
    ]
    np.testing.assert_array_equal(outputs["OUTPUT0"], left + right)
    np.testing.assert_array_equal(outputs["OUTPUT1"], left - right)


def test_json_inference_with_nested_data_and_a_version(client: TestClient) -> None:
    left, right = _simple_pair(1)
    inputs = [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": left.tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": right.tolist()},
    ]

    response = client.post("/v2/models/simple/versions/1/infer", json={"inputs": inputs})

    assert response.status_code == 200, response.text
    _, outputs = split_response(response.content, None)
    np.testing.assert_array_equal(outputs["OUTPUT0"], left + right)


def test_requested_outputs_only_are_returned(client: TestClient) -> None:
    left, right = _simple_pair()

    response = client.post(
        "/v2/models/simple/infer",
        json={"inputs": _tensors(INPUT0=left, INPUT1=right), "outputs": [{"name": "OUTPUT1"}]},
    )

    assert response.status_code == 200, response.text
    header, outputs = split_response(response.content, None)
    assert [o["name"] for o in header["outputs"]] == ["OUTPUT1"]
    np.testing.assert_array_equal(outputs["OUTPUT1"], left - right)


def test_binary_inference_as_tritonclient_sends_it(client: TestClient) -> None:
    left, right = _simple_pair(3)
    outputs = [
        triton.InferRequestedOutput("OUTPUT0", binary_data=True),
        triton.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]

    response = _binary_infer(
        client,
        "/v2/models/simple/infer",
        [_triton_input("INPUT0", left), _triton_input("INPUT1", right)],
        outputs=outputs,
        request_id="bin-1",
    )

    assert response.status_code == 200, response.text
    length = _header_length(response)
    assert length is not None
    assert response.headers["content-type"] == "application/octet-stream"
    header, arrays = split_response(response.content, length)
    assert header["id"] == "bin-1"
    assert header["outputs"][0]["parameters"] == {"binary_data_size": left.nbytes}
    assert "data" in header["outputs"][1]
    np.testing.assert_array_equal(arrays["OUTPUT0"], left + right)
    np.testing.assert_array_equal(arrays["OUTPUT1"], left - right)
    result = triton.InferResult.from_response_body(response.content, header_length=length)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), left + right)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), left - right)


def test_binary_inputs_with_json_outputs_answer_json(client: TestClient) -> None:
    left, right = _simple_pair()

    response = _binary_infer(
        client,
        "/v2/models/simple/infer",
        [_triton_input("INPUT0", left), _triton_input("INPUT1", right, binary=False)],
        outputs=[triton.InferRequestedOutput("OUTPUT0", binary_data=False)],
    )

    assert response.status_code == 200, response.text
    assert _header_length(response) is None
    _, arrays = split_response(response.content, None)
    np.testing.assert_array_equal(arrays["OUTPUT0"], left + right)


def test_binary_data_output_makes_every_output_binary(client: TestClient) -> None:
    left, right = _simple_pair()

    response = client.post(
        "/v2/models/simple/infer",
        json={"inputs": _tensors(INPUT0=left, INPUT1=right), "parameters": {"binary_data_output": True}},
    )

    assert response.status_code == 200, response.text
    length = _header_length(response)
    assert length is not None
    header, arrays = split_response(response.content, length)
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [left.nbytes, left.nbytes]
    np.testing.assert_array_equal(arrays["OUTPUT1"], left - right)


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)], ids=["gzip", "deflate"]
)
def test_compressed_binary_request(client: TestClient, encoding: str, compress: Any) -> None:
    left, right = _simple_pair()
    body, length = triton.InferenceServerClient.generate_request_body(
        [_triton_input("INPUT0", left), _triton_input("INPUT1", right)]
    )

    response = client.post(
        "/v2/models/simple/infer",
        content=compress(body),
        headers={HEADER_LENGTH: str(length), "Content-Encoding": encoding},
    )

    assert response.status_code == 200, response.text
    _, arrays = split_response(response.content, _header_length(response))
    np.testing.assert_array_equal(arrays["OUTPUT0"], left + right)


def test_mlp_answers_what_onnxruntime_computes(client: TestClient, built_repository: Path) -> None:
    batch = reference_inputs()["mlp"]
    session = onnxruntime.InferenceSession(
        str(built_repository / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(None, {"input": batch})

    as_json = client.post("/v2/models/mlp/infer", json={"inputs": _tensors(input=batch)})
    as_binary = _binary_infer(
        client, "/v2/models/mlp/infer", [_triton_input("input", batch)], outputs=[triton.InferRequestedOutput("output")]
    )

    assert as_json.status_code == 200, as_json.text
    assert as_binary.status_code == 200, as_binary.text
    _, from_json = split_response(as_json.content, None)
    _, from_binary = split_response(as_binary.content, _header_length(as_binary))
    assert from_json["output"].shape == (3, 4)
    np.testing.assert_allclose(from_json["output"], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(from_binary["output"], expected)


def test_iris_predicts_the_classes(client: TestClient) -> None:
    rows = reference_inputs()["iris"]

    response = client.post("/v2/models/iris/infer", json={"inputs": _tensors(input=rows)})

    assert response.status_code == 200, response.text
    header, outputs = split_response(response.content, None)
    assert [(o["name"], o["datatype"], o["shape"]) for o in header["outputs"]] == [
        ("predict", "INT64", [2]),
        ("predict_proba", "FP64", [2, 3]),
    ]
    assert outputs["predict"].tolist() == [0, 2]
    np.testing.assert_allclose(outputs["predict_proba"].sum(axis=1), [1.0, 1.0])


def test_tiny_cnn_answers_json_and_binary_alike(client: TestClient) -> None:
    images = reference_inputs()["tiny_cnn"]

    as_json = client.post("/v2/models/tiny_cnn/infer", json={"inputs": _tensors(image=images)})
    as_binary = _binary_infer(
        client,
        "/v2/models/tiny_cnn/infer",
        [_triton_input("image", images)],
        outputs=[triton.InferRequestedOutput("logits"), triton.InferRequestedOutput("probabilities")],
    )

    assert as_json.status_code == 200, as_json.text
    assert as_binary.status_code == 200, as_binary.text
    _, from_json = split_response(as_json.content, None)
    _, from_binary = split_response(as_binary.content, _header_length(as_binary))
    logits = from_binary["logits"].astype(np.float64)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    assert from_binary["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(from_binary["probabilities"], softmax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_json["logits"], from_binary["logits"], rtol=1e-6)


# -- statistics --------------------------------------------------------------------------------------


def _simple_stats(client: TestClient) -> dict[str, Any]:
    response = client.get("/v2/models/simple/versions/1/stats")
    assert response.status_code == 200, response.text
    stats: list[dict[str, Any]] = response.json()["model_stats"]
    assert len(stats) == 1
    return stats[0]


def test_statistics_grow_with_inference(client: TestClient) -> None:
    left, right = _simple_pair(2)
    before = _simple_stats(client)

    for _ in range(2):
        ok = client.post("/v2/models/simple/infer", json={"inputs": _tensors(INPUT0=left, INPUT1=right)})
        assert ok.status_code == 200, ok.text
    bad = client.post("/v2/models/simple/infer", json={"inputs": _tensors(INPUT0=left, INPUT1=right[:, :8])})
    assert bad.status_code == 400
    after = _simple_stats(client)

    assert (after["name"], after["version"]) == ("simple", "1")
    assert after["inference_count"] == before["inference_count"] + 4  # samples: two batches of 2
    assert after["execution_count"] == before["execution_count"] + 2
    success, fail = after["inference_stats"]["success"], after["inference_stats"]["fail"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 2
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert fail["count"] == before["inference_stats"]["fail"]["count"] + 1
    assert after["last_inference"] >= before["last_inference"]
    assert after["last_inference"] > 0
    batch_of_two = next(b for b in after["batch_stats"] if b["batch_size"] == 2)
    assert batch_of_two["compute_infer"]["count"] >= 2
    assert after["memory_usage"][0]["byte_size"] > 0


def test_statistics_of_all_models_and_of_one(client: TestClient) -> None:
    everything = client.get("/v2/models/stats")
    one = client.get("/v2/models/iris/stats")

    assert everything.status_code == 200
    assert one.status_code == 200
    names = {(s["name"], s["version"]) for s in everything.json()["model_stats"]}
    assert {("iris", "1"), ("mlp", "1"), ("simple", "1")} <= names
    assert [(s["name"], s["version"]) for s in one.json()["model_stats"]] == [("iris", "1")]
    keys = set(one.json()["model_stats"][0]["inference_stats"])
    assert {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output"} <= keys

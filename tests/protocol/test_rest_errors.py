"""Refusals over HTTP: each answers the right status with ``{"error": ..., "trace_id": ...}`` saying what
to fix, and the server keeps serving good requests afterwards."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.protocol.serving import HEADER_LENGTH, TestClient, serving

LEFT = np.arange(32, dtype=np.int32).reshape(2, 16)
RIGHT = np.ones((2, 16), dtype=np.int32)


def _input(name: str, array: np.ndarray, datatype: str = "INT32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.reshape(-1).tolist()}


def _good_request() -> dict[str, Any]:
    return {"inputs": [_input("INPUT0", LEFT), _input("INPUT1", RIGHT)]}


@pytest.fixture(scope="module")
def partial(built_repository: Path) -> Iterator[TestClient]:
    """Explicit mode with `simple` and `iris` loaded at start; `mlp` and `tiny_cnn` are in the repository, unloaded."""
    with serving(built_repository, load_models=["simple", "iris"]) as client:
        yield client


def _refused(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error", "trace_id"]
    assert body["trace_id"] == response.headers["x-trace-id"]  # the id the request's log lines carry
    message: str = body["error"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    return message


def _still_serves(client: TestClient) -> None:
    response = client.post("/v2/models/simple/infer", json=_good_request())
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == (LEFT + RIGHT).reshape(-1).tolist()


# -- models and versions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/no_such_model/infer"),
        ("POST", "/v2/models/no_such_model/versions/1/infer"),
        ("GET", "/v2/models/no_such_model"),
        ("GET", "/v2/models/no_such_model/ready"),
        ("GET", "/v2/models/no_such_model/config"),
        ("GET", "/v2/models/no_such_model/stats"),
    ],
)
def test_unknown_model_is_404(partial: TestClient, method: str, path: str) -> None:
    response = partial.request(method, path, json=_good_request() if method == "POST" else None)

    _refused(response, 404, "no_such_model", "not in the model repository")
    _still_serves(partial)


def test_unknown_model_in_v1_is_404(partial: TestClient) -> None:
    _refused(partial.post("/v1/predict", json={"model": "no_such_model", "inputs": [[1]]}), 404, "no_such_model")
    _still_serves(partial)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/simple/versions/2/infer"),
        ("GET", "/v2/models/simple/versions/2"),
        ("GET", "/v2/models/simple/versions/2/ready"),
        ("GET", "/v2/models/simple/versions/2/config"),
        ("GET", "/v2/models/simple/versions/2/stats"),
    ],
)
def test_unknown_version_is_404(partial: TestClient, method: str, path: str) -> None:
    response = partial.request(method, path, json=_good_request() if method == "POST" else None)

    _refused(response, 404, "version 2", "versions served: 1")
    _still_serves(partial)


@pytest.mark.parametrize("version", ["abc", "0", "-1", "1.0", "³"])  # '³' passes str.isdigit()
@pytest.mark.parametrize("suffix", ["/infer", "", "/ready", "/config", "/stats"])
def test_version_that_is_not_a_positive_integer_is_400(partial: TestClient, version: str, suffix: str) -> None:
    path = f"/v2/models/simple/versions/{version}{suffix}"
    response = partial.post(path, json=_good_request()) if suffix == "/infer" else partial.get(path)

    _refused(response, 400, f"model version '{version}'", "positive integer")
    _still_serves(partial)


def test_v1_version_that_is_not_a_positive_integer_is_400(partial: TestClient) -> None:
    response = partial.post("/v1/predict", json={"model": "iris", "version": "one", "inputs": [[1, 2, 3, 4]]})

    _refused(response, 400, "'one'", "positive integer")
    _still_serves(partial)


def test_v1_version_of_a_digit_int_cannot_read_is_400(partial: TestClient) -> None:
    response = partial.post("/v1/predict", json={"model": "iris", "version": "²", "inputs": [[1, 2, 3, 4]]})

    _refused(response, 400, "'²'", "positive integer")
    _still_serves(partial)


def test_v1_unknown_version_is_404(partial: TestClient) -> None:
    response = partial.post("/v1/predict", json={"model": "iris", "version": 2, "inputs": [[1, 2, 3, 4]]})

    _refused(response, 404, "version 2", "versions served: 1")
    _still_serves(partial)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/mlp/infer"),
        ("GET", "/v2/models/mlp"),
        ("GET", "/v2/models/mlp/ready"),
        ("GET", "/v2/models/mlp/config"),
    ],
)
def test_model_not_loaded_is_503_never_400(partial: TestClient, method: str, path: str) -> None:
    body = {"inputs": [_input("input", np.zeros((1, 16), np.float32), "FP32")]} if method == "POST" else None

    response = partial.request(method, path, json=body)

    _refused(response, 503, "model 'mlp'", "not loaded", "/load")
    assert response.headers["retry-after"] == "1"
    _still_serves(partial)


def test_model_not_loaded_in_v1_is_503(partial: TestClient) -> None:
    response = partial.post("/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]})

    _refused(response, 503, "model 'mlp'", "not loaded")
    assert response.headers["retry-after"] == "1"
    _still_serves(partial)


def test_refusals_are_counted_under_the_model_they_name(partial: TestClient) -> None:
    assert partial.post("/v2/models/mlp/infer", json={"inputs": [_input("input", LEFT)]}).status_code == 503
    assert partial.post("/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]}).status_code == 503
    assert partial.post("/v2/models/simple/infer", json={"inputs": [_input("INPUT0", LEFT)]}).status_code == 400

    seen = set()
    for family in text_string_to_metric_families(partial.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "model_serving_requests_total":
                labels = sample.labels
                seen.add((labels["model"], labels["protocol"], labels["status"], labels["code"]))
    assert ("mlp", "http", "error", "503") in seen
    assert ("mlp", "http_v1", "error", "503") in seen
    assert ("simple", "http", "error", "400") in seen


# -- request bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/models/simple/infer", "/v1/predict"])
def test_malformed_json_is_400(partial: TestClient, path: str) -> None:
    response = partial.post(path, content=b'{"inputs": [', headers={"content-type": "application/json"})

    _refused(response, 400, "not valid JSON")
    _still_serves(partial)


def test_wrong_datatype_names_the_tensor_and_the_expected_datatype(partial: TestClient) -> None:
    request = {"inputs": [_input("INPUT0", LEFT, "FP32"), _input("INPUT1", RIGHT)]}

    _refused(partial.post("/v2/models/simple/infer", json=request), 400, "input 'INPUT0'", "FP32", "expects INT32")
    _still_serves(partial)


def test_wrong_shape_names_the_tensor_and_the_expected_shape(partial: TestClient) -> None:
    request = {"inputs": [_input("INPUT0", LEFT[:, :15]), _input("INPUT1", RIGHT[:, :15])]}

    _refused(partial.post("/v2/models/simple/infer", json=request), 400, "input 'INPUT0'", "[2, 15]", "[-1, 16]")
    _still_serves(partial)


def test_batch_over_max_batch_size_is_400(partial: TestClient) -> None:
    nine = np.zeros((9, 16), dtype=np.int32)
    request = {"inputs": [_input("INPUT0", nine), _input("INPUT1", nine)]}

    _refused(partial.post("/v2/models/simple/infer", json=request), 400, "batch size 9", "max_batch_size", "8")
    _still_serves(partial)


def test_missing_input_is_400(partial: TestClient) -> None:
    response = partial.post("/v2/models/simple/infer", json={"inputs": [_input("INPUT0", LEFT)]})

    _refused(response, 400, "INPUT1", "INT32", "does not send")
    _still_serves(partial)


def test_unknown_input_is_400(partial: TestClient) -> None:
    request = {"inputs": [*_good_request()["inputs"], _input("INPUT2", LEFT)]}

    _refused(partial.post("/v2/models/simple/infer", json=request), 400, "'INPUT2'", "INPUT0", "INPUT1")
    _still_serves(partial)


def test_unknown_output_is_400(partial: TestClient) -> None:
    request = {**_good_request(), "outputs": [{"name": "OUTPUT9"}]}

    _refused(partial.post("/v2/models/simple/infer", json=request), 400, "'OUTPUT9'", "OUTPUT0", "OUTPUT1")
    _still_serves(partial)


def test_v1_input_that_is_not_of_the_model_datatype_is_400(partial: TestClient) -> None:
    response = partial.post("/v1/predict", json={"model": "iris", "inputs": [["a", "b", "c", "d"]]})

    _refused(response, 400, "input 'input'", "FP64")
    _still_serves(partial)


def test_v1_body_without_model_says_what_to_send(partial: TestClient) -> None:
    _refused(partial.post("/v1/predict", json={"inputs": [[1, 2, 3, 4]]}), 400, '"model"', '"inputs"')
    _still_serves(partial)


def test_header_length_that_is_not_a_number_is_400(partial: TestClient) -> None:
    response = partial.post("/v2/models/simple/infer", json=_good_request(), headers={HEADER_LENGTH: "twelve"})

    _refused(response, 400, HEADER_LENGTH, "'twelve'")
    _still_serves(partial)


def test_header_length_of_a_digit_int_cannot_read_is_400(partial: TestClient) -> None:
    # HTTP header values are latin-1, so '³' can arrive; httpx sends it only as bytes.
    headers = {HEADER_LENGTH: "³".encode("latin-1")}

    response = partial.post("/v2/models/simple/infer", json=_good_request(), headers=headers)

    _refused(response, 400, HEADER_LENGTH, "is not a number")
    _still_serves(partial)


@pytest.mark.parametrize(
    "shape",
    [pytest.param([0] * 65, id="more-dimensions-than-numpy-holds"), pytest.param([0, 2**62, 4], id="overflowing")],
)
def test_shape_numpy_cannot_hold_is_400(partial: TestClient, shape: list[int]) -> None:
    body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": shape, "data": []}]}

    _refused(partial.post("/v2/models/simple/infer", json=body), 400, "input 'INPUT0'", "cannot be held")
    _still_serves(partial)


def test_model_name_longer_than_a_file_name_is_404(partial: TestClient) -> None:
    name = "m" * 300

    _refused(partial.get(f"/v2/models/{name}"), 404, name, "not in the model repository")
    _refused(partial.post(f"/v2/models/{name}/infer", json=_good_request()), 404, name)
    _still_serves(partial)


def test_binary_size_past_the_body_is_400(partial: TestClient) -> None:
    header = b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,16],"parameters":{"binary_data_size":64}}]}'

    response = partial.post(
        "/v2/models/simple/infer", content=header + bytes(32), headers={HEADER_LENGTH: str(len(header))}
    )

    _refused(response, 400, "input 'INPUT0'", "binary_data_size 64", "32 bytes")
    _still_serves(partial)


def test_unsupported_content_encoding_is_400(partial: TestClient) -> None:
    response = partial.post("/v2/models/simple/infer", content=b"\x00\x01", headers={"Content-Encoding": "br"})

    _refused(response, 400, "'br'", "gzip")
    _still_serves(partial)


# -- routes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v2/nope", "/v2/models/simple/infer/extra", "/v1/nope"])
def test_unknown_route_is_404_json(partial: TestClient, path: str) -> None:
    _refused(partial.get(path), 404, path)
    _still_serves(partial)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v2/models/simple/infer", "POST"),
        ("POST", "/v2/health/live", "GET"),
        ("DELETE", "/v2/models/simple", "GET"),
        ("GET", "/v1/predict", "POST"),
        ("GET", "/v2/repository/index", "POST"),
    ],
)
def test_wrong_method_is_405_json_with_allow(partial: TestClient, method: str, path: str, allowed: str) -> None:
    response = partial.request(method, path)

    _refused(response, 405, method, path)
    assert allowed in response.headers.get("allow", ""), "a 405 must say which methods are allowed (RFC 9110)"
    _still_serves(partial)


# -- MAX_INPUT_SIZE_MB -------------------------------------------------------------------------------

LIMIT_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def small(built_repository: Path) -> Iterator[TestClient]:
    """A server whose requests may carry at most 16 KiB."""
    with serving(built_repository, load_models=["simple", "iris"], max_input_size_mb=LIMIT_BYTES / 2**20) as client:
        yield client


def _large_request() -> bytes:
    big = np.zeros((8, 16), dtype=np.int32)
    body = f'{{"inputs":[{{"name":"INPUT0","datatype":"INT32","shape":[8,16],"data":{big.tolist()}}}]}}'
    return body.encode() + b" " * LIMIT_BYTES


def test_body_over_the_limit_is_413(small: TestClient) -> None:
    body = _large_request()

    response = small.post("/v2/models/simple/infer", content=body)

    _refused(response, 413, f"of {len(body)} bytes", "MAX_INPUT_SIZE_MB", f"({LIMIT_BYTES} bytes)")
    _still_serves(small)


def test_streamed_body_over_the_limit_is_413(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        body = _large_request()
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = small.post("/v2/models/simple/infer", content=chunks())  # chunked: no Content-Length to check first

    _refused(response, 413, "MAX_INPUT_SIZE_MB", f"({LIMIT_BYTES} bytes)")
    _still_serves(small)


def test_compressed_body_inflating_over_the_limit_is_413(small: TestClient) -> None:
    bomb = gzip.compress(_large_request() + b" " * LIMIT_BYTES * 64)
    assert len(bomb) < LIMIT_BYTES

    response = small.post("/v2/models/simple/infer", content=bomb, headers={"Content-Encoding": "gzip"})

    _refused(response, 413, "MAX_INPUT_SIZE_MB", f"{LIMIT_BYTES} bytes")
    _still_serves(small)


def test_v1_body_over_the_limit_is_413(small: TestClient) -> None:
    body = b'{"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}' + b" " * LIMIT_BYTES

    _refused(small.post("/v1/predict", content=body), 413, "MAX_INPUT_SIZE_MB")
    assert small.post("/v1/predict", json={"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200

"""Triton Python models served by a real `modelserve serve`, asked by tritonclient over HTTP and gRPC:
Triton's add_sub and BLS examples unchanged, a preprocessing model, failures, hangs and instances."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.e2e.server import RunningServer, serve
from tests.python_models import (
    ONE_TENSOR_CONFIG,
    PREPROCESS,
    PREPROCESS_CONFIG,
    RAISES,
    REFUSES_NEGATIVE,
    SLEEPS,
    sleeps_config,
    write_bls_repository,
    write_python_model,
)

REQUEST_TIMEOUT_S = 2.0  # above two sleeps in a row, below a hang
HANG_S = 6.0  # longer than REQUEST_TIMEOUT_S: the caller must not wait for it
SLEEP_S = 0.5

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("python_models")
    repository = root / "model_repository"
    write_bls_repository(repository)
    write_python_model(repository, "preprocess", PREPROCESS, PREPROCESS_CONFIG)
    write_python_model(repository, "raises", RAISES, ONE_TENSOR_CONFIG)
    write_python_model(repository, "refuses", REFUSES_NEGATIVE, ONE_TENSOR_CONFIG)
    write_python_model(repository, "hangs", SLEEPS, sleeps_config(HANG_S, 1))
    write_python_model(repository, "sleeps_two", SLEEPS, sleeps_config(SLEEP_S, 2))
    write_python_model(repository, "sleeps_one", SLEEPS, sleeps_config(SLEEP_S, 1))
    args = ("--model-control-mode", "explicit", "--load-model", "*", "--request-timeout-sec", str(REQUEST_TIMEOUT_S))
    with serve(repository, root / "server.log", *args) as running:
        yield running


def _inputs(module: type[httpclient.InferInput] | type[grpcclient.InferInput], **arrays: np.ndarray) -> list[Any]:
    tensors = []
    for name, array in arrays.items():
        tensor = module(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.random(4, dtype=np.float32), rng.random(4, dtype=np.float32)


def test_add_sub_answers_tritonclient_over_http(server: RunningServer) -> None:
    a, b = _pair()
    with httpclient.InferenceServerClient(server.address) as client:
        result = client.infer("add_sub", _inputs(httpclient.InferInput, INPUT0=a, INPUT1=b), request_id="1")
        metadata = client.get_model_metadata("add_sub")
        config = client.get_model_config("add_sub")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)
    assert metadata["platform"] == "python"
    assert [t["name"] for t in metadata["inputs"]] == ["INPUT0", "INPUT1"]
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 0


def test_add_sub_answers_tritonclient_over_grpc(server: RunningServer) -> None:
    a, b = _pair()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        result = client.infer("add_sub", _inputs(grpcclient.InferInput, INPUT0=a, INPUT1=b))
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("target", ["add_sub", "pytorch"])
def test_bls_sync_example_calls_the_model_it_is_told(server: RunningServer, target: str) -> None:
    a, b = _pair()
    name = np.array([target], dtype=np.object_)
    with httpclient.InferenceServerClient(server.address) as client:
        result = client.infer("bls_sync", _inputs(httpclient.InferInput, INPUT0=a, INPUT1=b, MODEL_NAME=name))
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)


def test_bls_async_example_over_grpc(server: RunningServer) -> None:
    a, b = _pair()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        result = client.infer("bls_async", _inputs(grpcclient.InferInput, INPUT0=a, INPUT1=b))
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)  # from "pytorch", the ONNX model
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)  # from "add_sub", the Python model


def test_bls_to_a_missing_model_is_a_500_naming_both(server: RunningServer) -> None:
    a, b = _pair()
    name = np.array(["missing"], dtype=np.object_)
    with httpclient.InferenceServerClient(server.address) as client, pytest.raises(InferenceServerException) as failed:
        client.infer("bls_sync", _inputs(httpclient.InferInput, INPUT0=a, INPUT1=b, MODEL_NAME=name))
    assert failed.value.status() == "500"
    assert "model 'bls_sync' version 1: execute raised TritonModelException" in failed.value.message()
    assert "'missing' is not found" in failed.value.message()


def test_preprocessing_batches_images_and_bytes(server: RunningServer) -> None:
    images = np.random.default_rng(3).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    captions = np.array([["a dog"], ["two cats"]], dtype=np.object_)
    with httpclient.InferenceServerClient(server.address) as client:
        result = client.infer("preprocess", _inputs(httpclient.InferInput, IMAGE=images, CAPTION=captions))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((images / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(result.as_numpy("NORMALIZED"), expected, rtol=1e-5)
    assert result.as_numpy("CAPTION").tolist() == [[b"A DOG"], [b"TWO CATS"]]


def _x(value: float) -> dict[str, object]:
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [value]}]}


def test_a_model_that_raises_is_a_500_naming_it_and_others_still_serve(server: RunningServer) -> None:
    answer = httpx.post(f"{server.url}/v2/models/raises/infer", json=_x(1.0), timeout=10)
    assert answer.status_code == 500
    assert "model 'raises' version 1: execute raised ValueError" in answer.json()["error"]
    assert "no row 7" in answer.json()["error"]
    assert httpx.post(f"{server.url}/v2/models/refuses/infer", json=_x(2.0), timeout=10).status_code == 200
    assert "ValueError: the lookup table has no row 7" in server.output()  # the model's traceback, logged


def test_an_error_response_is_a_500_for_that_request(server: RunningServer) -> None:
    refused = httpx.post(f"{server.url}/v2/models/refuses/infer", json=_x(-1.0), timeout=10)
    assert refused.status_code == 500
    assert refused.json()["error"] == "model 'refuses' version 1: X must not be negative"
    answered = httpx.post(f"{server.url}/v2/models/refuses/infer", json=_x(3.0), timeout=10)
    assert answered.json()["outputs"][0]["data"] == [3.0]


def test_a_hanging_model_is_answered_504_within_the_request_timeout(server: RunningServer) -> None:
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        hung = pool.submit(httpx.post, f"{server.url}/v2/models/hangs/infer", json=_x(1.0), timeout=30)
        # While it hangs, its own thread is busy and no other: the other models answer at once.
        a, b = _pair()
        with httpclient.InferenceServerClient(server.address) as client:
            result = client.infer("add_sub", _inputs(httpclient.InferInput, INPUT0=a, INPUT1=b))
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
        answer = hung.result()
        waited = time.monotonic() - started
    assert answer.status_code == 504
    assert (
        f"model 'hangs' did not answer within {REQUEST_TIMEOUT_S:g} s (REQUEST_TIMEOUT_SEC)" in answer.json()["error"]
    )
    assert waited < REQUEST_TIMEOUT_S + 1.0, waited


def _two_at_once(server: RunningServer, model: str) -> float:
    """Seconds two concurrent requests to ``model`` take, both answered."""
    with ThreadPoolExecutor(2) as pool, httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        answers = list(pool.map(lambda v: client.post(f"{server.url}/v2/models/{model}/infer", json=_x(v)), [1, 2]))
        elapsed = time.perf_counter() - started
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert sorted(a.json()["outputs"][0]["data"][0] for a in answers) == [1.0, 2.0]
    return elapsed


def test_two_instances_run_two_executes_at_once(server: RunningServer) -> None:
    """Each execute sleeps SLEEP_S (releasing the GIL): two instances answer two requests in about one
    sleep, one instance in two."""
    assert _two_at_once(server, "sleeps_two") < 1.6 * SLEEP_S
    assert _two_at_once(server, "sleeps_one") >= 2 * SLEEP_S

"""NVIDIA's tritonclient, unchanged, against a real server: infer, metadata, config, stats, repository."""

from __future__ import annotations

import asyncio
import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.builders import batched_copy_of_simple, echo_bytes_onnx, reference_inputs
from tests.e2e.server import RunningServer, serve

DATATYPE = {np.float32: "FP32", np.float64: "FP64", np.int32: "INT32", np.object_: "BYTES"}


@pytest.fixture(scope="module")
def triton(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The example models plus a BYTES echo model and a `simple` copy that batches only in fours."""
    root = tmp_path_factory.mktemp("triton")
    repository = root / "model_repository"
    shutil.copytree(built_repository, repository)
    echo_bytes_onnx(repository / "echo" / "1" / "model.onnx")
    batched_copy_of_simple(repository, "simple_batched", "  max_queue_delay_ms: 10000\n  preferred_batch_sizes: [4]\n")
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


@pytest.fixture
def client(triton: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(triton.address, concurrency=8) as c:
        yield c


def tensor(name: str, array: np.ndarray, binary: bool) -> httpclient.InferInput:
    item = httpclient.InferInput(name, list(array.shape), DATATYPE[array.dtype.type])
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def in_process(repository: Path, model: str, array: np.ndarray) -> dict[str, Any]:
    """The same model file run directly by its library: the reference for the server's numbers."""
    if model == "mlp":
        session = ort.InferenceSession(str(repository / "mlp" / "1" / "model.onnx"))
        return {"output": session.run(None, {"input": array})[0]}
    if model == "tiny_cnn":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # TorchScript is what we serve
            module = torch.jit.load(str(repository / "tiny_cnn" / "1" / "model.pt"))
        with torch.inference_mode():
            logits, probabilities = module(torch.from_numpy(array))
        return {"logits": logits.numpy(), "probabilities": probabilities.numpy()}
    estimator = joblib.load(repository / "iris" / "1" / "model.joblib")
    return {"predict": estimator.predict(array), "predict_proba": estimator.predict_proba(array)}


def test_server_and_model_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("simple", "1")
    assert [i["name"] for i in metadata["inputs"]] == ["INPUT0", "INPUT1"]
    assert metadata["inputs"][0]["shape"] == [-1, 16]
    config = client.get_model_config("simple")
    assert config["max_batch_size"] == 8
    assert config["input"][0] == {**config["input"][0], "data_type": "TYPE_INT32", "dims": [16]}


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_simple_adds_and_subtracts(client: httpclient.InferenceServerClient, binary: bool, batch: int) -> None:
    rng = np.random.default_rng(batch)
    a = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("simple", [tensor("INPUT0", a, binary), tensor("INPUT1", b, binary)], outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("model", ["mlp", "tiny_cnn", "iris"])
def test_numbers_equal_the_model_run_in_process(
    client: httpclient.InferenceServerClient, built_repository: Path, model: str, binary: bool
) -> None:
    array = reference_inputs()[model]
    name = "image" if model == "tiny_cnn" else "input"
    result = client.infer(model, [tensor(name, array, binary)], request_id="check-7")
    assert result.get_response()["id"] == "check-7"
    for output, expected in in_process(built_repository, model, array).items():
        np.testing.assert_allclose(result.as_numpy(output), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_tensors_round_trip(client: httpclient.InferenceServerClient, binary: bool) -> None:
    text = np.array([[b"hello", b""], ["héllo wörld".encode(), b"x" * 1000]], dtype=np.object_)
    output = httpclient.InferRequestedOutput("ECHO", binary_data=binary)
    result = client.infer("echo", [tensor("TEXT", text, binary)], outputs=[output])
    # Over JSON, BYTES travel as strings and tritonclient hands them back as str, as it does with Triton.
    expected = text if binary else np.vectorize(bytes.decode, otypes=[object])(text)
    assert result.as_numpy("ECHO").tolist() == expected.tolist()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: httpclient.InferenceServerClient, algorithm: str) -> None:
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    result = client.infer(
        "simple", [tensor("INPUT0", a, True), tensor("INPUT1", a, True)], request_compression_algorithm=algorithm
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_answers(triton: RunningServer, client: httpclient.InferenceServerClient, algorithm: str) -> None:
    """tritonclient asks for a compressed answer and inflates it; the server sent it compressed."""
    a = np.arange(8 * 16, dtype=np.int32).reshape(8, 16) * 1_000_003  # large numbers: a JSON answer of 2 KB
    inputs = [tensor("INPUT0", a, False), tensor("INPUT1", a, False)]
    result = client.infer("simple", inputs, response_compression_algorithm=algorithm)
    body = {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [8, 16], "data": a.ravel().tolist()} for n in ("INPUT0", "INPUT1")
        ]
    }
    raw = httpx.post(f"{triton.url}/v2/models/simple/infer", json=body, headers={"Accept-Encoding": algorithm})

    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)
    assert raw.headers["content-encoding"] == algorithm
    assert int(raw.headers["content-length"]) < len(raw.content) // 2  # httpx inflated what came compressed
    assert raw.json()["outputs"][0]["data"] == (a * 2).ravel().tolist()


def test_errors_surface_as_client_exceptions(client: httpclient.InferenceServerClient) -> None:
    a = np.zeros((9, 16), dtype=np.int32)
    with pytest.raises(InferenceServerException, match="max_batch_size") as too_big:
        client.infer("simple", [tensor("INPUT0", a, True), tensor("INPUT1", a, True)])
    assert too_big.value.status() == "400"
    wrong = np.zeros((1, 16), dtype=np.float32)
    with pytest.raises(InferenceServerException, match=r"INPUT0.*FP32.*INT32"):
        client.infer("simple", [tensor("INPUT0", wrong, False), tensor("INPUT1", wrong.astype(np.int32), False)])
    assert client.is_model_ready("simple")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_unknown_model_is_refused_in_tritons_words(triton: RunningServer, protocol: str) -> None:
    """Triton's examples and client code match on the start of this message: it must arrive unchanged."""
    module: Any = httpclient if protocol == "http" else grpcclient
    a = np.zeros((1, 16), dtype=np.int32)
    inputs = [module.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for item in inputs:
        item.set_data_from_numpy(a)
    with module.InferenceServerClient(triton.address if protocol == "http" else triton.grpc_address) as client:
        with pytest.raises(InferenceServerException) as metadata:
            client.get_model_metadata("resnet50")
        with pytest.raises(InferenceServerException) as inference:
            client.infer("resnet50", inputs)
    for refused in (metadata.value, inference.value):
        assert refused.message().startswith("Request for unknown model: 'resnet50' is not found")
        assert refused.status() == ("404" if protocol == "http" else "StatusCode.NOT_FOUND")


def test_statistics_count_inferences(client: httpclient.InferenceServerClient) -> None:
    def counts() -> tuple[int, int]:
        stats = client.get_inference_statistics("simple", "1")["model_stats"][0]
        return stats["inference_count"], stats["inference_stats"]["success"]["count"]

    before = counts()
    a = np.ones((5, 16), dtype=np.int32)
    for _ in range(3):
        client.infer("simple", [tensor("INPUT0", a, True), tensor("INPUT1", a, True)])
    inferences, successes = counts()
    assert (inferences - before[0], successes - before[1]) == (15, 3)
    everything = client.get_inference_statistics()["model_stats"]
    assert {"simple", "mlp", "iris", "tiny_cnn", "echo"} <= {s["name"] for s in everything}


def test_concurrent_requests_are_batched(client: httpclient.InferenceServerClient) -> None:
    """simple_batched waits (up to 10 s) until four samples queue, so four callers share one call."""
    arrays = [np.full((1, 16), i, dtype=np.int32) for i in range(4)]
    pending = [
        client.async_infer("simple_batched", [tensor("INPUT0", a, True), tensor("INPUT1", a, True)]) for a in arrays
    ]
    for a, request in zip(arrays, pending, strict=True):
        np.testing.assert_array_equal(request.get_result(timeout=30).as_numpy("OUTPUT0"), a * 2)
    stats = client.get_inference_statistics("simple_batched")["model_stats"][0]
    assert stats["execution_count"] == 1
    assert [b["batch_size"] for b in stats["batch_stats"]] == [4]


def test_repository_control(client: httpclient.InferenceServerClient) -> None:
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert index["mlp"]["state"] == "READY"
    client.unload_model("mlp")
    assert not client.is_model_ready("mlp")
    with pytest.raises(InferenceServerException, match="not loaded") as refused:
        client.infer("mlp", [tensor("input", np.zeros((1, 16), np.float32), True)])
    assert refused.value.status() == "503"
    assert {e["name"]: e["state"] for e in client.get_model_repository_index()}["mlp"] == "UNAVAILABLE"
    client.load_model("mlp")
    assert client.is_model_ready("mlp")


def test_aio_client(triton: RunningServer) -> None:
    async def run() -> list[np.ndarray]:
        async with aioclient.InferenceServerClient(triton.address) as client:
            assert await client.is_server_ready()
            requests = []
            for i in range(6):
                a = np.full((1, 16), i, dtype=np.int32)
                inputs = [aioclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
                for item in inputs:
                    item.set_data_from_numpy(a)
                requests.append(client.infer("simple", inputs))
            return [r.as_numpy("OUTPUT0") for r in await asyncio.gather(*requests)]

    for i, output in enumerate(asyncio.run(run())):
        np.testing.assert_array_equal(output, np.full((1, 16), 2 * i, dtype=np.int32))


def test_many_clients_at_once_get_their_own_answers(triton: RunningServer) -> None:
    def one(i: int) -> bool:
        with httpclient.InferenceServerClient(triton.address) as c:
            a = np.full((1 + i % 4, 16), i, dtype=np.int32)
            result = c.infer("simple", [tensor("INPUT0", a, i % 2 == 0), tensor("INPUT1", a, True)])
            return bool((result.as_numpy("OUTPUT0") == 2 * a).all())

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, range(64)))


def test_bytes_that_are_not_text_are_refused_before_they_reach_an_onnx_model(
    client: httpclient.InferenceServerClient,
) -> None:
    raw = np.array([[b"\xff\xfe", b"ok"]], dtype=np.object_)
    with pytest.raises(InferenceServerException, match=r"input 'TEXT' holds bytes that are not UTF-8") as refused:
        client.infer("echo", [tensor("TEXT", raw, True)])
    assert refused.value.status() == "400"

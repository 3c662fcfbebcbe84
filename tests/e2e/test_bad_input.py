"""Bad requests against a real process: each gets its status and a message, and nothing else is disturbed."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.e2e.server import RunningServer, serve

GOOD = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]
}


@pytest.fixture(scope="module")
def small_limit(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that refuses bodies over 1 MiB (MAX_INPUT_SIZE_MB) and never allows model control."""
    root = tmp_path_factory.mktemp("limits")
    with serve(built_repository, root / "server.log", env={"MAX_INPUT_SIZE_MB": "1"}) as running:
        yield running


def good_request_still_works(server: RunningServer) -> None:
    answer = httpx.post(f"{server.url}/v2/models/simple/infer", json=GOOD)
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["data"] == list(range(1, 17))


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/simple/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/simple/infer", b'{"inputs": []}', 400, "non-empty 'inputs' list"),
        ("/v2/models/simple/infer", b'{"inputs": [{"name": "I", "datatype": "INT33", "shape": [1]}]}', 400, "INT33"),
        ("/v2/models/nope/infer", b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}', 404, "nope"),
        ("/v2/models/simple/versions/x/infer", b"{}", 400, "'x' is not a positive integer"),
        ("/v1/predict", b'{"inputs": [[1]]}', 400, '{"model": name'),
        ("/v1/predict", b'{"model": "mlp", "inputs": [["a", "b"]]}', 400, "FP32 data must be numbers, found strings"),
        ("/v1/predict", b'{"model": "mlp", "inputs": [[1, 2]]}', 400, "expects [-1, 16]"),
        ("/v2/repository/models/mlp/unload", b"", 400, "--model-control-mode explicit"),
    ],
)
def test_bad_requests(small_limit: RunningServer, path: str, body: bytes, status: int, message: str) -> None:
    answer = httpx.post(f"{small_limit.url}{path}", content=body)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    good_request_still_works(small_limit)


def test_oversized_bodies_are_refused(small_limit: RunningServer) -> None:
    big = np.zeros((1, 400_000), dtype=np.float32).tolist()
    declared = httpx.post(f"{small_limit.url}/v1/predict", json={"model": "mlp", "inputs": big})
    assert declared.status_code == 413
    assert "MAX_INPUT_SIZE_MB" in declared.json()["error"]

    def stream() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "mlp", "inputs": ['
        for _ in range(300):
            yield b"[" + b"0.0," * 1000 + b"0.0],"
        yield b"[0.0]]}"

    streamed = httpx.post(f"{small_limit.url}/v1/predict", content=stream())
    assert streamed.status_code == 413
    bomb = gzip.compress(b" " * (4 * 1024 * 1024))
    inflated = httpx.post(
        f"{small_limit.url}/v2/models/simple/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert inflated.status_code == 413
    good_request_still_works(small_limit)


def test_bad_requests_among_good_ones_disturb_nothing(small_limit: RunningServer) -> None:
    def call(i: int) -> tuple[int, int, list[int] | None]:
        if i % 2:
            answer = httpx.post(f"{small_limit.url}/v2/models/simple/infer", content=b'{"inputs": [{"name": 1}]}')
            return i, answer.status_code, None
        a = [i] * 16
        body = {"inputs": [{**GOOD["inputs"][0], "data": a}, {**GOOD["inputs"][1], "data": a}]}
        answer = httpx.post(f"{small_limit.url}/v2/models/simple/infer", json=body)
        return i, answer.status_code, answer.json()["outputs"][0]["data"]

    with ThreadPoolExecutor(8) as pool:
        for i, status, data in pool.map(call, range(80)):
            if i % 2:
                assert status == 400
            else:
                assert status == 200
                assert data == [2 * i] * 16
    metrics = httpx.get(f"{small_limit.url}/metrics").text
    series = 'model_serving_requests_total{code="400",model="simple",protocol="http",status="error",version=""}'
    assert series in metrics


def test_grpc_messages_over_the_limit_are_refused(small_limit: RunningServer) -> None:
    with grpcclient.InferenceServerClient(small_limit.grpc_address) as client:
        big = grpcclient.InferInput("input", [20_000, 16], "FP32")
        big.set_data_from_numpy(np.zeros((20_000, 16), np.float32))  # 1.25 MiB, over MAX_INPUT_SIZE_MB=1
        with pytest.raises(InferenceServerException) as caught:
            client.infer("mlp", [big])
        assert "RESOURCE_EXHAUSTED" in caught.value.status()
        assert client.is_server_ready()

"""A model repository on S3: a real S3 endpoint (moto's server mode) and s3fs, as an operator deploys it."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import s3fs

from tests.builders import scale_onnx
from tests.e2e.server import RunningServer, serve
from tests.s3 import CREDENTIALS, Unanswering, running_s3


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free loopback port, for as long as the module runs."""
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture(scope="module")
def bucket(endpoint: str, built_repository: Path) -> s3fs.S3FileSystem:
    """Bucket `models` holding mlp and simple under `repo/`."""
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
    fs.mkdir("models")
    for name in ("mlp", "simple"):
        fs.put(str(built_repository / name), f"models/repo/{name}", recursive=True)
    return fs


@pytest.fixture(scope="module")
def server(
    endpoint: str, bucket: s3fs.S3FileSystem, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("s3-server")
    env = {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": endpoint, "MODEL_CACHE_DIR": str(root / "cache")}
    args = ("--model-control-mode", "explicit", "--load-model", "mlp")
    with serve("s3://models/repo", root / "server.log", *args, env=env) as running:
        yield running


def test_models_are_served_from_the_bucket(server: RunningServer) -> None:
    answer = httpx.post(f"{server.url}/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]})
    assert answer.status_code == 200
    assert len(answer.json()["outputs"]["output"][0]) == 4
    index = {e["name"]: e["state"] for e in httpx.post(f"{server.url}/v2/repository/index").json()}
    assert index == {"mlp": "READY", "simple": "UNAVAILABLE"}


def test_a_model_uploaded_at_runtime_can_be_loaded(
    server: RunningServer, bucket: s3fs.S3FileSystem, tmp_path: Path
) -> None:
    scale_onnx(tmp_path / "tripler" / "1" / "model.onnx", factor=3.0)
    bucket.put(str(tmp_path / "tripler"), "models/repo/tripler", recursive=True)
    assert httpx.post(f"{server.url}/v1/models/tripler/load").status_code == 200
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    answer = httpx.post(f"{server.url}/v2/models/tripler/infer", json=body)
    assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]


def test_a_file_that_differs_from_its_published_checksum_never_loads(
    server: RunningServer, bucket: s3fs.S3FileSystem
) -> None:
    model = bucket.cat_file("models/repo/simple/1/model.onnx")
    config = bucket.cat_file("models/repo/simple/config.yaml")
    listed = f"{hashlib.sha256(config).hexdigest()}  config.yaml\n"
    bucket.pipe_file("models/repo/simple/SHA256SUMS", f"{listed}{'f' * 64}  1/model.onnx\n".encode())
    refused = httpx.post(f"{server.url}/v2/repository/models/simple/load")
    assert refused.status_code == 400
    assert "differs from SHA256SUMS" in refused.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/simple/ready").status_code == 503
    bucket.pipe_file("models/repo/simple/SHA256SUMS", f"{hashlib.sha256(model).hexdigest()}  1/model.onnx\n".encode())
    refused = httpx.post(f"{server.url}/v2/repository/models/simple/load")
    assert refused.status_code == 400
    assert "config.yaml is not in SHA256SUMS" in refused.json()["error"]
    published = f"{listed}{hashlib.sha256(model).hexdigest()}  1/model.onnx\n"
    bucket.pipe_file("models/repo/simple/SHA256SUMS", published.encode())
    assert httpx.post(f"{server.url}/v2/repository/models/simple/load").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/simple/ready").status_code == 200


@contextmanager
def stopped_store(built_repository: Path, tmp_path: Path, read_timeout_s: int) -> Iterator[tuple[RunningServer, str]]:
    """A server serving mlp from a real S3 store, which then goes down under it: the server, and the
    address the store answered on."""
    with ExitStack() as store:
        endpoint = store.enter_context(running_s3(tmp_path / "moto.log"))
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
        fs.mkdir("models")
        fs.put(str(built_repository / "mlp"), "models/repo/mlp", recursive=True)
        env = {
            **CREDENTIALS,
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
            "FSSPEC_S3_CONFIG_KWARGS": json.dumps({"connect_timeout": 1, "read_timeout": read_timeout_s}),
            "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        }
        args = ("--model-control-mode", "explicit", "--load-model", "mlp")
        with serve("s3://models/repo", tmp_path / "server.log", *args, env=env) as server:
            store.close()
            yield server, endpoint


def test_a_store_that_stops_answering_is_a_503_and_loaded_models_keep_serving(
    built_repository: Path, tmp_path: Path
) -> None:
    with stopped_store(built_repository, tmp_path, read_timeout_s=1) as (server, _):
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        for answer in (
            httpx.post(f"{server.url}/v2/models/never-seen/infer", json=body, timeout=30),
            httpx.post(f"{server.url}/v2/repository/index", timeout=30),
        ):
            assert answer.status_code == 503, answer.text
            assert "model repository s3://models/repo is unavailable" in answer.json()["error"]
        served = httpx.post(f"{server.url}/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]})
        assert served.status_code == 200
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_a_store_that_hangs_holds_up_only_the_requests_that_ask_it(built_repository: Path, tmp_path: Path) -> None:
    with stopped_store(built_repository, tmp_path, read_timeout_s=2) as (server, endpoint):
        hung = Unanswering(urlsplit(endpoint).port or 0)  # the store's address now takes calls, answers none
        try:
            asked: list[httpx.Response] = []
            asking = threading.Thread(
                target=lambda: asked.append(httpx.get(f"{server.url}/v2/models/never-seen/ready", timeout=60))
            )
            asking.start()
            deadline = time.monotonic() + 10
            while not hung.connections:  # the lookup is waiting on the store
                assert time.monotonic() < deadline, "the server never asked the store"
                time.sleep(0.01)
            started = time.perf_counter()
            live = httpx.get(f"{server.url}/health/live", timeout=10)
            served = httpx.post(f"{server.url}/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]})
            waited = time.perf_counter() - started
            asking.join(timeout=60)
        finally:
            hung.close()

    assert live.status_code == 200
    assert served.status_code == 200
    # The lookup waits seconds on the store (three attempts of a 2 s read); it must do so off the event loop.
    assert waited < 1.0, f"a probe and an inference waited {waited:.1f} s behind a lookup in a hung store"
    (answer,) = asked
    assert answer.status_code == 503, answer.text
    assert "model repository s3://models/repo is unavailable" in answer.json()["error"]

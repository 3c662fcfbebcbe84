"""Callers cannot grow the metrics' label sets or the traffic history's table: a model name the server
does not know is counted as ``model="unknown"`` and left out of the history, on every path (HTTP V2 and
V1, gRPC ModelInfer and ModelStreamInfer), whatever else is wrong with the request (a malformed
version, a body that does not parse)."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelserve.history.query import TrafficHistory
from tests.e2e.server import free_port
from tests.protocol.serving import TestClient, metric_value, metrics_of, serving

MADE_UP = [f"made-up-{n}" for n in range(3)]


def _requests(client: TestClient) -> None:
    """Requests naming models that do not exist, each refused for a reason found before any lookup."""
    for name in MADE_UP:
        assert client.post(f"/v2/models/{name}/versions/x/infer", json={"inputs": []}).status_code == 400
        assert client.post(f"/v2/models/{name}/infer", content=b"{not json").status_code == 404
        v1 = client.post("/v1/predict", json={"model": name, "version": "x", "inputs": [[1.0]]})
        assert v1.status_code == 400, v1.text
    # A model the server knows keeps its name, even when the request is malformed.
    assert client.post("/v2/models/iris/versions/x/infer", json={"inputs": []}).status_code == 400


def _grpc_requests(address: str) -> None:
    """The same over gRPC: a malformed version and an unknown name, by ModelInfer and on a stream."""
    asked = [service_pb2.ModelInferRequest(model_name=name, model_version=v) for name in MADE_UP for v in ("x", "")]
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for request in asked:
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request, timeout=10)
            assert refused.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        answers = list(stub.ModelStreamInfer(iter(asked), timeout=10))
    assert len(answers) == len(asked)
    assert all(answer.error_message for answer in answers)


@pytest.fixture(scope="module")
def database(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """The history database and the metrics after ``_requests`` ran against a server keeping both."""
    root = tmp_path_factory.mktemp("labels")
    url, port = f"sqlite:///{root / 'history.db'}", free_port()
    with serving(built_repository, model_cache_dir=str(root / "cache"), database_url=url, grpc_port=port) as client:
        _requests(client)
        _grpc_requests(f"127.0.0.1:{port}")
        samples = metrics_of(client)
    return root / "history.db", samples


def test_metrics_count_unknown_models_as_unknown(database: tuple[Path, dict[str, list]]) -> None:
    _, samples = database
    names = {labels.get("model") for series in samples.values() for labels, _ in series}
    assert not names & set(MADE_UP), "a made-up model name became a label"
    total = "model_serving_requests_total"
    assert metric_value(samples, total, model="unknown", protocol="http", code="400") == len(MADE_UP)
    assert metric_value(samples, total, model="unknown", protocol="http", code="404") == len(MADE_UP)
    assert metric_value(samples, total, model="unknown", protocol="http_v1", code="400") == len(MADE_UP)
    assert metric_value(samples, total, model="iris", protocol="http", code="400") == 1
    assert metric_value(samples, total, model="unknown", protocol="grpc", code="INVALID_ARGUMENT") == 2 * len(MADE_UP)
    assert metric_value(samples, total, model="unknown", protocol="grpc", code="NOT_FOUND") == 2 * len(MADE_UP)
    rejected = "model_serving_rejected_requests_total"
    assert metric_value(samples, rejected, model="unknown", reason="invalid_input") == 4 * len(MADE_UP)


def test_the_history_keeps_only_models_the_server_knows(database: tuple[Path, dict[str, list]]) -> None:
    path, _ = database
    engine = create_engine(f"sqlite:///{path}")
    try:
        assert TrafficHistory(engine).models(0, math.inf) == ["iris"]
    finally:
        engine.dispose()

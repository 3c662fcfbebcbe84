"""What a real `modelserve serve` process logs for the people on call: LOG_LEVEL as they write it, and
a trace id on every line written for a request, the one its error answer names, traced or not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.e2e.server import RunningServer, serve
from tests.server.credentials import API_KEYS, INFER_KEY

GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
BAD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": [0.5] * 15}]}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00"}  # the caller does not record this trace


def _lines(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of the server's output."""
    return [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _access(log: Path) -> list[dict[str, Any]]:
    return [line for line in _lines(log) if line["logger"] == "modelserve.access"]


def _assert_ids(line: dict[str, Any]) -> None:
    """W3C-valid ids: 32 and 16 lower-case hex digits, not all zero."""
    assert re.fullmatch("[0-9a-f]{32}", line["trace_id"]), line
    assert re.fullmatch("[0-9a-f]{16}", line["span_id"]), line
    assert int(line["trace_id"], 16) != 0
    assert int(line["span_id"], 16) != 0


def _trailing_trace_id(error: grpc.RpcError) -> str:
    assert isinstance(error, grpc.Call)
    return dict(error.trailing_metadata() or ())["x-trace-id"]


def _unknown_model(request_id: str = "") -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(model_name="nowhere", id=request_id)


def test_log_level_in_capitals_starts_the_server_at_that_level(built_repository: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serve(built_repository, log, env={"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}):
        pass

    assert any(line["level"] == "info" and line["message"].startswith("ready:") for line in _lines(log))
    assert not any(line["level"] == "debug" for line in _lines(log))


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """JSON logs, tracing off (the default): no request has a span, and every one has ids all the same."""
    log = tmp_path_factory.mktemp("request_logs") / "server.log"
    with serve(built_repository, log, env={"LOG_FORMAT": "json"}) as running:
        yield running


def test_over_http_each_request_line_has_its_own_ids_and_an_error_answer_names_them(server: RunningServer) -> None:
    before = len(_access(server.log))
    answered = httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD)
    refused = httpx.post(f"{server.url}/v2/models/mlp/infer", json=BAD)
    continued = httpx.post(f"{server.url}/v2/models/mlp/infer", json=BAD, headers=UNSAMPLED)

    assert (answered.status_code, refused.status_code, continued.status_code) == (200, 400, 400)
    first, second, third = server.access_lines(before + 3)[before:]
    for line in (first, second, third):
        _assert_ids(line)
    assert first["trace_id"] != second["trace_id"]  # a new trace per request without a traceparent
    assert refused.json()["trace_id"] == refused.headers["x-trace-id"] == second["trace_id"]
    assert continued.json()["trace_id"] == continued.headers["x-trace-id"] == third["trace_id"] == TRACE_ID
    assert third["span_id"] != "00f067aa0ba902b7"  # the caller's span is the parent of the request's
    # The runbook's procedure: grep the error answer's trace_id, find the request's lines.
    found = [line for line in server.output().splitlines() if refused.json()["trace_id"] in line]
    assert [orjson.loads(line)["message"] for line in found] == ["inference request"]


def test_a_metadata_routes_error_names_a_trace_id_and_the_callers(server: RunningServer) -> None:
    missing = httpx.get(f"{server.url}/v2/models/nowhere")
    continued = httpx.get(f"{server.url}/v2/models/nowhere/config", headers=UNSAMPLED)

    assert (missing.status_code, continued.status_code) == (404, 404)
    assert re.fullmatch("[0-9a-f]{32}", missing.json()["trace_id"])
    assert missing.headers["x-trace-id"] == missing.json()["trace_id"] != TRACE_ID
    assert continued.headers["x-trace-id"] == continued.json()["trace_id"] == TRACE_ID


def test_over_grpc_an_error_names_its_requests_trace_id_in_trailing_metadata(server: RunningServer) -> None:
    before = len(_access(server.log))
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as fresh:
            stub.ModelInfer(_unknown_model(), timeout=10)
        with pytest.raises(grpc.RpcError) as continued:
            stub.ModelInfer(_unknown_model(), metadata=tuple(UNSAMPLED.items()), timeout=10)
        [streamed] = stub.ModelStreamInfer(iter([_unknown_model("one")]), timeout=10)
        with pytest.raises(grpc.RpcError) as metadata:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nowhere"), timeout=10)

    first, second, third = server.access_lines(before + 3)[before:]
    assert {line["protocol"] for line in (first, second, third)} == {"grpc"}
    for line in (first, second, third):
        _assert_ids(line)
    assert _trailing_trace_id(fresh.value) == first["trace_id"] != TRACE_ID
    assert _trailing_trace_id(continued.value) == second["trace_id"] == TRACE_ID
    # A stream's error is a message, not the end of the call: its trace id is a parameter of the echo.
    assert streamed.error_message
    assert streamed.infer_response.id == "one"
    assert streamed.infer_response.parameters["trace_id"].string_param == third["trace_id"]
    assert re.fullmatch("[0-9a-f]{32}", _trailing_trace_id(metadata.value))


def test_a_refused_credential_names_the_trace_id_of_its_line(built_repository: Path, tmp_path: Path) -> None:
    """Refusals are answered before any handler runs, over HTTP at the front door, over gRPC by the
    interceptor: they get their ids there."""
    log = tmp_path / "server.log"
    with serve(built_repository, log, env={"LOG_FORMAT": "json", "API_KEYS": API_KEYS}) as running:
        refused = httpx.post(f"{running.url}/v2/models/mlp/infer", json=GOOD, headers=UNSAMPLED)
        with grpc.insecure_channel(running.grpc_address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(_unknown_model(), metadata=(("authorization", "Bearer wrong-key-0123456789"),))
            metadata = (("authorization", f"Bearer {INFER_KEY}"),)
            with pytest.raises(grpc.RpcError) as forbidden:
                stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=metadata, timeout=10)

    http_line, grpc_line = _access(log)
    assert refused.status_code == 401
    assert refused.json()["trace_id"] == refused.headers["x-trace-id"] == http_line["trace_id"] == TRACE_ID
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    _assert_ids(grpc_line)
    assert _trailing_trace_id(caught.value) == grpc_line["trace_id"]
    assert forbidden.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert re.fullmatch("[0-9a-f]{32}", _trailing_trace_id(forbidden.value))

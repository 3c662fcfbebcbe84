"""Traces from a real `modelserve serve` process to an OTLP receiver, over both OTLP transports,
configured only by OpenTelemetry's standard environment."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import numpy as np
import orjson
import tritonclient.grpc as triton_grpc

from tests.e2e.otlp import ReceivedSpan, otlp_receiver
from tests.e2e.server import serve
from tests.e2e.test_cli import modelserve

GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
STAGES = {"admission", "queue", "batch", "encode"}


def traceparent(trace_id: str, parent_id: str) -> str:
    return f"00-{trace_id}-{parent_id}-01"


def _server_span(spans: dict[str, ReceivedSpan], name: str) -> ReceivedSpan:
    assert name in spans, f"no span {name!r} in {sorted(spans)}"
    return spans[name]


def _assert_continued(spans: dict[str, ReceivedSpan], name: str, parent_id: str, service: str) -> None:
    server = _server_span(spans, name)
    assert server.parent_id == parent_id  # the caller's span is the parent: continued, not replaced
    assert spans.keys() >= STAGES
    for stage in STAGES:
        assert spans[stage].parent_id == server.span_id, stage
        assert spans[stage].service == service


def test_grpc_export_continues_traceparent_from_grpc_metadata_and_http_headers(
    built_repository: Path, tmp_path: Path
) -> None:
    grpc_trace, http_trace = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"
    log = tmp_path / "server.log"
    with otlp_receiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.grpc_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "modelserve-e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "TRACE_SAMPLE_RATE": "1",
        }
        with serve(built_repository, log, env=env) as server:
            client = triton_grpc.InferenceServerClient(server.grpc_address)
            tensor = triton_grpc.InferInput("input", [1, 16], "FP32")
            tensor.set_data_from_numpy(np.full((1, 16), 0.5, dtype=np.float32))
            headers = {"traceparent": traceparent(grpc_trace, "b7ad6b7169203331")}
            assert client.infer("mlp", [tensor], headers=headers).as_numpy("output") is not None
            client.close()
            response = httpx.post(
                f"{server.url}/v2/models/mlp/infer",
                json=GOOD,
                headers={"traceparent": traceparent(http_trace, "00f067aa0ba902b7")},
            )
            assert response.status_code == 200
            receiver.wait_for(
                lambda spans: {s.trace_id for s in spans if s.span.name == "encode"} >= {grpc_trace, http_trace},
                "complete traces of both requests",
            )
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(timeout=30)

        service = "modelserve-e2e"
        grpc_spans, http_spans = receiver.trace(grpc_trace), receiver.trace(http_trace)
        _assert_continued(grpc_spans, "inference.GRPCInferenceService/ModelInfer", "b7ad6b7169203331", service)
        _assert_continued(http_spans, "POST /v2/models/{model}/infer", "00f067aa0ba902b7", service)
        assert {s.transport for s in receiver.received} == {"grpc"}

    access = [orjson.loads(line) for line in log.read_text().splitlines() if '"modelserve.access"' in line]
    assert {(line["protocol"], line.get("trace_id")) for line in access} == {("grpc", grpc_trace), ("http", http_trace)}


def test_http_protobuf_export_to_a_traces_endpoint(built_repository: Path, tmp_path: Path) -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    with otlp_receiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{receiver.http_port}/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "TRACE_SAMPLE_RATE": "0.5",
        }
        with serve(built_repository, tmp_path / "server.log", env=env) as server:
            body = {"model": "mlp", "inputs": [[0.5] * 16]}
            headers = {"traceparent": traceparent(trace_id, "eee19b7ec3c1b174")}
            assert httpx.post(f"{server.url}/v1/predict", json=body, headers=headers).status_code == 200
            receiver.wait_for(lambda spans: any(s.trace_id == trace_id for s in spans), "the /v1/predict trace")
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(timeout=30)

        spans = receiver.trace(trace_id)
        _assert_continued(spans, "POST /v1/predict", "eee19b7ec3c1b174", "modelserve")  # the default name
        assert {s.transport for s in spans.values()} == {"http/protobuf"}


def test_an_unknown_otlp_protocol_stops_startup(built_repository: Path) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    result = modelserve("serve", "--model-repository", str(built_repository), env=env)
    assert result.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported; use one of grpc, http/protobuf" in result.stderr

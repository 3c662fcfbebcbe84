"""Traces in-process, through OpenTelemetry's in-memory exporter: the spans of a request, a caller's
``traceparent`` continued, parent-based sampling, errors, the batch span's links, and the trace and
span ids every request has for its log lines and its error answer, traced or not."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelserve.batching.batcher import Batcher
from modelserve.models.stats import ModelStats
from modelserve.observability.logging import configure_logging
from modelserve.observability.tracing import Tracing, begin_request, otlp_exporter, request_ids, tracer_provider
from tests.protocol.serving import serving

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SIMPLE = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]
}


def traceparent(sampled: bool = True) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-{'01' if sampled else '00'}"}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def tracing_to(exporter: InMemorySpanExporter, rate: float = 1.0) -> Tracing:
    return Tracing(tracer_provider(SimpleSpanProcessor(exporter)), rate)


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), f"span names repeat: {[s.name for s in spans]}"
    return named


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_a_v2_request_continues_the_callers_trace_with_a_span_per_stage(
    built_repository: Path, exporter: InMemorySpanExporter
) -> None:
    with serving(built_repository, tracing=tracing_to(exporter)) as client:
        response = client.post("/v2/models/simple/infer", json=SIMPLE, headers=traceparent())
        assert response.status_code == 200, response.text

    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"POST /v2/models/{model}/infer", "admission", "queue", "batch", "encode"}
    server = spans["POST /v2/models/{model}/infer"]
    assert {hex_trace(span) for span in spans.values()} == {TRACE_ID}
    assert server.kind is SpanKind.SERVER
    assert parent_id(server) == int(PARENT_ID, 16)
    assert server.parent is not None
    assert server.parent.is_remote
    for stage in ("admission", "queue", "encode", "batch"):
        assert parent_id(spans[stage]) == span_id(server), stage
    attributes = server.attributes or {}
    assert attributes["modelserve.model"] == "simple"
    assert attributes["modelserve.model.version"] == "1"
    assert attributes["http.response.status_code"] == 200
    assert attributes["modelserve.protocol"] == "http"
    batch = spans["batch"]
    assert [link.context.span_id for link in batch.links] == [span_id(server)]
    assert (batch.attributes or {})["modelserve.batch.requests"] == 1
    queue, admission, encode = spans["queue"], spans["admission"], spans["encode"]
    order = [admission.end_time, queue.start_time, queue.end_time, batch.start_time, batch.end_time, encode.start_time]
    assert order == sorted(order)  # admission, then the wait, then the batch, then encoding


def test_a_request_without_traceparent_starts_a_new_trace(
    built_repository: Path, exporter: InMemorySpanExporter
) -> None:
    with serving(built_repository, tracing=tracing_to(exporter)) as client:
        assert client.post("/v1/predict", json={"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200

    spans = by_name(exporter.get_finished_spans())
    server = spans["POST /v1/predict"]
    assert server.parent is None
    assert hex_trace(server) != TRACE_ID
    assert (server.attributes or {})["modelserve.model"] == "iris"
    assert {hex_trace(span) for span in spans.values()} == {hex_trace(server)}


def test_sampling_follows_the_caller_and_the_rate_decides_new_traces(
    built_repository: Path, exporter: InMemorySpanExporter
) -> None:
    with serving(built_repository, tracing=tracing_to(exporter, rate=0.0)) as client:
        for _ in range(5):
            assert client.post("/v2/models/simple/infer", json=SIMPLE).status_code == 200
        unsampled = client.post("/v2/models/simple/infer", json=SIMPLE, headers=traceparent(sampled=False))
        assert unsampled.status_code == 200
        assert exporter.get_finished_spans() == ()  # rate 0 records no new trace; an unsampled caller is followed
        assert client.post("/v2/models/simple/infer", json=SIMPLE, headers=traceparent()).status_code == 200

    assert {hex_trace(span) for span in exporter.get_finished_spans()} == {TRACE_ID}
    assert len(exporter.get_finished_spans()) == 5


def test_a_refused_request_is_an_error_span_saying_why(built_repository: Path, exporter: InMemorySpanExporter) -> None:
    with serving(built_repository, tracing=tracing_to(exporter)) as client:
        assert client.post("/v2/models/nowhere/infer", json=SIMPLE, headers=traceparent()).status_code == 404

    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"POST /v2/models/{model}/infer", "admission"}
    server = spans["POST /v2/models/{model}/infer"]
    assert server.status.status_code is StatusCode.ERROR
    assert "nowhere" in (server.status.description or "")
    assert (server.attributes or {})["http.response.status_code"] == 404
    assert spans["admission"].status.status_code is StatusCode.ERROR


async def test_a_batch_span_links_every_request_it_carried(exporter: InMemorySpanExporter) -> None:
    tracer = tracing_to(exporter).tracer
    assert tracer is not None
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(
            "double", lambda x: {"y": x["x"] * 2}, pool, ModelStats(), max_batch_size=8, max_queue_delay_ms=200,
            preferred_batch_sizes=(3,), tracer=tracer,
        )  # fmt: skip

        async def call(i: int) -> float:
            with tracer.start_as_current_span(f"request-{i}"):
                outputs = await batcher.submit({"x": np.full((1, 2), i, dtype=np.float32)}, 1)
            return float(outputs["y"][0, 0])

        assert await asyncio.gather(*(call(i) for i in range(3))) == [0.0, 2.0, 4.0]
        await batcher.close()

    spans = exporter.get_finished_spans()
    requests = {s.name: s for s in spans if s.name.startswith("request-")}
    [batch] = [s for s in spans if s.name == "batch"]
    linked = {link.context.span_id for link in batch.links}
    assert linked == {span_id(s) for s in requests.values()}
    assert parent_id(batch) == span_id(requests["request-0"])
    assert (batch.attributes or {})["modelserve.batch.samples"] == 3
    assert len([s for s in spans if s.name == "queue"]) == 3


def test_a_log_line_written_inside_a_traced_request_carries_its_trace_id(
    exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    try:
        tracer = tracing_to(exporter).tracer
        assert tracer is not None
        with tracer.start_as_current_span("request") as span:
            logging.getLogger("modelserve.test").info("inside")
        logging.getLogger("modelserve.test").info("outside")
    finally:
        logging.getLogger().handlers.clear()
    inside, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in outside
    assert "span_id" not in outside


def test_any_log_line_written_inside_an_untraced_request_carries_its_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """Not only the access line: whatever a request logs, traced or not, says which request it was."""
    configure_logging("info", "json")

    def request() -> tuple[int, int] | None:
        begin_request(None)  # tracing off: the request has ids, and no span
        logging.getLogger("modelserve.test").warning("inside")
        return request_ids()

    try:
        ids = contextvars.copy_context().run(request)
    finally:
        logging.getLogger().handlers.clear()
    assert ids is not None
    assert trace.get_current_span().get_span_context().is_valid is False
    [inside] = _json_lines(capsys)
    assert (inside["trace_id"], inside["span_id"]) == (format(ids[0], "032x"), format(ids[1], "016x"))


def _ids_of(traceparent: str | None) -> tuple[int, int] | None:
    """The ids ``begin_request`` gives a request, set in a context of its own as each request has."""

    def begin() -> tuple[int, int] | None:
        begin_request(traceparent)
        return request_ids()

    return contextvars.copy_context().run(begin)


@pytest.mark.parametrize("flags", ["00", "01"])
def test_a_request_takes_its_callers_trace_id_sampled_or_not(flags: str) -> None:
    ids = _ids_of(f"00-{TRACE_ID}-{PARENT_ID}-{flags}")
    assert ids is not None
    assert format(ids[0], "032x") == TRACE_ID
    assert ids[1] not in (0, int(PARENT_ID, 16))  # the request's own span, a child of the caller's


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "",
        "garbage",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is invalid
        f"00-{'0' * 32}-{PARENT_ID}-01",  # an all-zero trace id is invalid
        f"00-{TRACE_ID}-{'0' * 16}-01",  # so is an all-zero parent id
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # W3C ids are lower-case
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
    ],
)
def test_a_request_without_a_valid_traceparent_gets_a_random_trace_id(traceparent: str | None) -> None:
    first, second = _ids_of(traceparent), _ids_of(traceparent)
    assert first is not None
    assert second is not None
    assert 0 < first[0] < 2**128
    assert 0 < first[1] < 2**64
    assert format(first[0], "032x") != TRACE_ID
    assert first[0] != second[0]
    assert first[1] != second[1]


def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_a_requests_log_line_and_error_answer_name_one_trace_id(
    built_repository: Path, exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str], rate: float
) -> None:
    """Untraced (rate 0) or traced, with no traceparent: the same ids in the access line and the answer,
    and a traced request's are its span's."""
    configure_logging("info", "json")
    try:
        with serving(built_repository, tracing=tracing_to(exporter, rate)) as client:
            capsys.readouterr()
            refused = client.post("/v2/models/simple/infer", json={"inputs": SIMPLE["inputs"][:1]})
    finally:
        logging.getLogger().handlers.clear()

    assert refused.status_code == 400
    [access] = [line for line in _json_lines(capsys) if line["logger"] == "modelserve.access"]
    assert refused.json()["trace_id"] == refused.headers["x-trace-id"] == access["trace_id"]
    assert re.fullmatch("[0-9a-f]{32}", str(access["trace_id"]))
    assert re.fullmatch("[0-9a-f]{16}", str(access["span_id"]))
    spans = [span for span in exporter.get_finished_spans() if span.name == "POST /v2/models/{model}/infer"]
    if rate == 0:
        assert spans == []  # no span for a request that is not traced
    else:
        [server] = spans
        assert (access["trace_id"], access["span_id"]) == (hex_trace(server), format(span_id(server), "016x"))


@pytest.fixture
def no_tracer_provider() -> Iterator[None]:
    yield
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing set a global provider


@pytest.mark.usefixtures("no_tracer_provider")
def test_tracing_is_off_without_an_endpoint_or_with_rate_zero() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not Tracing.from_environment(1.0, {}).enabled
    assert not Tracing.from_environment(0.0, endpoint).enabled
    tracing = Tracing.from_environment(0.5, endpoint)
    assert tracing.enabled
    tracing.shutdown()


def test_the_otlp_protocol_comes_from_opentelemetrys_environment() -> None:
    grpc = otlp_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    http = otlp_exporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert type(grpc).__module__.endswith("proto.grpc.trace_exporter")
    assert type(http).__module__.endswith("proto.http.trace_exporter")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='thrift' is not supported"):
        otlp_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"})


def test_new_traces_are_started_for_the_sample_rate_share_of_requests(exporter: InMemorySpanExporter) -> None:
    tracing = tracing_to(exporter, rate=0.25)

    def request() -> None:
        with tracing.request("request", {}, {}), tracing.span("stage"):
            pass

    for _ in range(2000):  # each in a context of its own, as the server runs each request
        contextvars.copy_context().run(request)
    traced = [span for span in exporter.get_finished_spans() if span.name == "request"]
    assert 400 <= len(traced) <= 600  # 500 expected; binomial sd ~19
    assert len(exporter.get_finished_spans()) == 2 * len(traced)  # a stage only under a traced request

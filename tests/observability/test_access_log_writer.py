"""With JSON logs, the access log's lines are written by a thread of its own, a batch per write: the
request only queues its values. Every line still arrives, in order and with the fields it always had,
or is counted in ``model_serving_access_log_dropped_lines_total``."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from modelserve.errors import InvalidInput
from modelserve.observability.logging import QUEUE_LINES, AccessLog, JsonLines, configure_logging
from modelserve.observability.metrics import Metrics
from modelserve.observability.tracing import begin_request, request_ids
from tests.protocol.serving import serving

SIMPLE = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]
}
BURST = 5_000
WAIT_S = 10.0  # the writer takes a batch every 50 ms: this is only how long a broken one may hang a test


class Sink(io.StringIO):
    """A stream that remembers the thread of each write and says when it holds ``lines`` lines."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.writers: list[threading.Thread] = []
        self.holds_all = threading.Event()
        self._lines = lines

    def write(self, text: str) -> int:
        self.writers.append(threading.current_thread())
        written = super().write(text)
        if self.getvalue().count("\n") >= self._lines:
            self.holds_all.set()
        return written

    def documents(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


class Held(Sink):
    """A stream whose writes wait until the test lets them go, as a pipe nobody reads does."""

    def __init__(self, lines: int) -> None:
        super().__init__(lines)
        self.entered = threading.Event()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        assert self.released.wait(WAIT_S), "the test never released the stream"
        return super().write(text)


class Broken(io.StringIO):
    """A stream whose reader has gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logging.getLogger().handlers.clear()


def _json_logs(stream: io.StringIO) -> None:
    """The server's logging with its defaults (JSON, INFO), into ``stream``. Called in the test itself:
    pytest adds its own handlers while a test runs, and the access log writes directly only when the
    JSON handler is alone."""
    configure_logging("info", "json")
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, JsonLines)
    handler.setStream(stream)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _dropped(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("model_serving_access_log_dropped_lines_total")


def _in_a_request(work: Callable[[], None]) -> tuple[int, int]:
    """Run ``work`` with a request's ids set, as the protocols set them; the ids."""

    def request() -> tuple[int, int]:
        begin_request(None)
        work()
        ids = request_ids()
        assert ids is not None
        return ids

    return contextvars.copy_context().run(request)


def test_a_burst_is_written_by_the_writer_thread_in_order_with_every_field(metrics: Metrics) -> None:
    sink = Sink(BURST)
    _json_logs(sink)
    log = AccessLog(1.0, metrics.observe_access_log_dropped)
    before = datetime.now(UTC)

    def burst() -> None:
        for i in range(BURST):
            error = InvalidInput(f"input 'x' has shape [1, {i}]") if i % 2 else None
            log.record(f"model-{i}", "1", "http", 400 if i % 2 else 200, i / 1e6, error)

    trace_id, span_id = _in_a_request(burst)
    try:
        assert sink.holds_all.wait(WAIT_S), "the writer thread never wrote the burst"
    finally:
        log.close()

    assert threading.current_thread() not in sink.writers  # nothing written on the request's thread
    assert len(sink.writers) < BURST / 100  # a batch per write, not a line
    documents = sink.documents()
    assert len(documents) == BURST
    stamps = [datetime.fromisoformat(str(document.pop("timestamp")).replace("Z", "+00:00")) for document in documents]
    assert before <= stamps[0]
    assert stamps == sorted(stamps)
    assert stamps[-1] <= datetime.now(UTC)
    for i, document in enumerate(documents):
        expected: dict[str, object] = {
            "model": f"model-{i}",
            "version": "1",
            "protocol": "http",
            "status": "error" if i % 2 else "success",
            "code": 400 if i % 2 else 200,
            "latency_ms": round(i / 1000, 3),
        }
        if i % 2:
            expected["error"] = f"input 'x' has shape [1, {i}]"
        expected.update(
            trace_id=format(trace_id, "032x"),
            span_id=format(span_id, "016x"),
            message="inference request",
            level="info",
            logger="modelserve.access",
        )
        assert list(document.items()) == list(expected.items())  # the fields, and their order
    assert _dropped(metrics) == 0


def test_lines_beyond_a_full_queue_are_counted_in_the_metric(metrics: Metrics) -> None:
    held = Held(1 + QUEUE_LINES)
    _json_logs(held)
    log = AccessLog(1.0, metrics.observe_access_log_dropped)
    try:
        log.record("first", "1", "grpc", "OK", 0.001, None)
        assert held.entered.wait(WAIT_S), "the writer thread never took the first line"
        # The writer is stuck in its write with the first line; the queue is empty again.
        for i in range(QUEUE_LINES + 3):
            log.record(f"model-{i}", "1", "grpc", "OK", 0.001, None)
        assert _dropped(metrics) == 3
    finally:
        held.released.set()
        log.close()

    models = [document["model"] for document in held.documents()]
    assert models == ["first", *(f"model-{i}" for i in range(QUEUE_LINES))]


def test_lines_a_broken_stream_refuses_are_counted(metrics: Metrics) -> None:
    _json_logs(Broken())
    log = AccessLog(1.0, metrics.observe_access_log_dropped)
    for _ in range(10):
        log.record("mlp", "1", "http", 200, 0.001, None)
    log.close()

    assert _dropped(metrics) == 10


def test_close_writes_every_queued_line_and_a_later_line_starts_the_writer_again(metrics: Metrics) -> None:
    sink = Sink(BURST + 1)
    _json_logs(sink)
    log = AccessLog(1.0, metrics.observe_access_log_dropped)
    for i in range(BURST):
        log.record(f"model-{i}", "1", "http", 200, 0.001, None)
    log.close()  # within the writer's first 50 ms: the lines are still queued

    assert [document["model"] for document in sink.documents()] == [f"model-{i}" for i in range(BURST)]
    log.record("after", "1", "http", 200, 0.001, None)
    try:
        assert sink.holds_all.wait(WAIT_S), "no writer thread took the line recorded after close"
    finally:
        log.close()
    assert sink.documents()[-1]["model"] == "after"


def _writers() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "access-log"}


def test_the_servers_shutdown_writes_its_lines_and_stops_its_writer(built_repository: Path) -> None:
    sink = Sink(3)
    _json_logs(sink)
    before = _writers()
    with serving(built_repository) as client:
        for _ in range(3):
            assert client.post("/v2/models/simple/infer", json=SIMPLE).status_code == 200
        assert _writers() - before, "the server's access log has no writer thread"

    assert _writers() <= before  # the lifespan closed it
    access = [line for line in sink.documents() if line["logger"] == "modelserve.access"]
    assert [(line["model"], line["code"]) for line in access] == [("simple", 200)] * 3

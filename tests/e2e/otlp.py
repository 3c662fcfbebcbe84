"""An OTLP trace receiver for the e2e tests: OpenTelemetry's own service definitions, served over gRPC
(``TraceService/Export``) and HTTP (``POST /v1/traces``, protobuf), as a collector or Jaeger serves them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, with the service that sent it and the transport it came over."""

    service: str
    transport: str
    span: Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()


@dataclass
class Receiver:
    """Spans received so far, and where to send them."""

    grpc_port: int = 0
    http_port: int = 0
    received: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                service = attributes.get("service.name", "")
                for scope in resource_spans.scope_spans:
                    self.received.extend(ReceivedSpan(service, transport, span) for span in scope.spans)

    def wait_for(self, condition: Callable[[list[ReceivedSpan]], bool], what: str, timeout_s: float = 15) -> None:
        """Poll until ``condition`` holds for the spans received, failing with ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                spans = list(self.received)
            if condition(spans):
                return
            if time.monotonic() > deadline:
                names = sorted({(s.span.name, s.trace_id) for s in spans})
                raise AssertionError(f"no {what} within {timeout_s:g} s; received: {names}")
            time.sleep(0.05)

    def trace(self, trace_id: str) -> dict[str, ReceivedSpan]:
        """The spans of one trace, by name."""
        with self.lock:
            return {s.span.name: s for s in self.received if s.trace_id == trace_id}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.receiver.add(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def _http_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
                self.send_error(400, f"unexpected {self.path} {self.headers['Content-Type']}")
                return
            receiver.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body), "http/protobuf")
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            """Silent: the test's output is the server's."""

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """Both OTLP transports on free loopback ports, until the block ends."""
    receiver = Receiver()
    server = grpc.server(ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(receiver), server)
    receiver.grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(receiver))
    receiver.http_port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        http.shutdown()
        http.server_close()
        server.stop(grace=None)

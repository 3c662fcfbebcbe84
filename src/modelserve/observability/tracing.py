"""Traces (OpenTelemetry): one trace per inference request, continued from the caller's W3C ``traceparent``.

A request's span has children for admission (lookup, size limits, body read, decode and validation),
its wait in the model's queue and the encoding of the answer. The batch that ran it is a span of its
own, parented to the first sampled request in it and linked to every request it carried, so a slow
request leads to the batch it waited for, and that batch to every request that shared it.

Tracing is on only when ``TRACE_SAMPLE_RATE`` > 0 and an OTLP endpoint is set in OpenTelemetry's
standard environment; the exporter reads the rest of that environment itself (headers, timeout,
certificates). When it is off, and for every request it does not trace, each hook below is a shared
no-op context: no span.

Every request has a trace id and a span id all the same, for its log lines and its error answer:
``begin_request`` gives it the caller's trace id when a ``traceparent`` came (sampled or not) or a
new random one, and a random span id, in a context variable. It costs two random numbers, and a
regular expression when a ``traceparent`` came; the hexadecimal text is made only for a line or an
answer that is written. A traced request's ids are its span's.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelserve import __version__
from modelserve.errors import ModelserveError

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOLS = ("grpc", "http/protobuf")

_PROPAGATOR = TraceContextTextMapPropagator()
_OFF: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)

# Names a request's trace id in an error answer: the HTTP header, and (lower-cased) the gRPC trailing metadata key.
TRACE_ID_HEADER = "X-Trace-Id"
# W3C's traceparent: version (not ff), trace id, parent id (not zero), flags; lower-case hex only.
_TRACEPARENT = re.compile(r"[ \t]*(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:-.*)?[ \t]*")
# The (trace id, span id) of the request being handled; None outside of one.
_REQUEST_IDS: ContextVar[tuple[int, int] | None] = ContextVar("modelserve_request_ids", default=None)
_random_bits = random.getrandbits


def otlp_protocol(environ: Mapping[str, str]) -> str | None:
    """The OTLP transport OpenTelemetry's environment asks for, or None when it names no endpoint."""
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    protocol = next((environ[name] for name in PROTOCOL_VARIABLES if environ.get(name)), "http/protobuf")
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}"
        )
    return protocol


def otlp_exporter(environ: Mapping[str, str]) -> SpanExporter | None:
    """The OTLP exporter for ``environ``; it reads the endpoint, headers and timeouts from it itself."""
    protocol = otlp_protocol(environ)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    return None


def tracer_provider(processor: SpanProcessor) -> TracerProvider:
    """A provider that records every span it is asked for: ``Tracing`` decides which requests are traced."""
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "modelserve"}))  # OTEL_SERVICE_NAME wins when set
    provider = TracerProvider(sampler=ALWAYS_ON, resource=resource)
    provider.add_span_processor(processor)
    return provider


class Tracing:
    """The server's tracer, or nothing at all when tracing is off.

    Sampling is parent-based and decided before any span exists: a request whose caller sent a
    sampled ``traceparent`` is traced, one whose caller's is unsampled is not, and a new trace is
    started for a ``sample_rate`` share of the rest. A request that is not traced costs a dictionary
    lookup and a random number; creating spans that record nothing would cost 25 µs a request.
    """

    def __init__(self, provider: TracerProvider | None = None, sample_rate: float = 1.0) -> None:
        self.provider = provider
        self.tracer: Tracer | None = provider.get_tracer("modelserve", __version__) if provider else None
        self._rate = sample_rate

    @classmethod
    def from_environment(cls, sample_rate: float, environ: Mapping[str, str] = os.environ) -> Tracing:
        """On when ``sample_rate`` > 0 and OpenTelemetry's environment names an OTLP endpoint."""
        exporter = otlp_exporter(environ) if sample_rate > 0 else None
        if exporter is None:
            return cls()
        return cls(tracer_provider(BatchSpanProcessor(exporter)), sample_rate)

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded at all."""
        return self.tracer is not None

    def request(
        self, name: str, carrier: Mapping[str, Any] | None, attributes: Mapping[str, str]
    ) -> AbstractContextManager[Span]:
        """The server span of one request, continuing the trace of ``carrier``'s ``traceparent`` if any."""
        if self.tracer is None:
            return _OFF
        parent = _PROPAGATOR.extract(carrier) if carrier and "traceparent" in carrier else None
        caller = trace.get_current_span(parent).get_span_context() if parent is not None else None
        if caller is not None and caller.is_valid:
            if not caller.trace_flags.sampled:
                return _OFF
        elif random.random() >= self._rate:
            return _OFF
        span = self.tracer.start_span(name, parent, SpanKind.SERVER, attributes=attributes)
        context = span.get_span_context()
        _REQUEST_IDS.set((context.trace_id, context.span_id))  # still the request's once the span has ended
        return trace.use_span(span, end_on_exit=True)

    def span(self, name: str) -> AbstractContextManager[Span]:
        """A child of the current span, one stage of a request; nothing when the request is not traced."""
        if self.tracer is None or not trace.get_current_span().is_recording():
            return _OFF
        return _Stage(self.tracer.start_span(name))

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        if self.provider is not None:
            self.provider.shutdown()


class _Stage(AbstractContextManager[Span]):
    """A span that is not made current: a stage has no children, and attaching a context costs."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        return self._span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None) -> None:
        if error is not None:
            _fail(self._span, error)
        self._span.end()


def finish_span(model: str, version: str, code: int | str, error: Exception | None) -> None:
    """Mark the current request span with its answer: the status code, and the error if it failed."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attributes({"modelserve.model": model, "modelserve.model.version": version})
    span.set_attribute("modelserve.response.code", code)
    if isinstance(code, int):
        span.set_attribute("http.response.status_code", code)
    if error is not None:
        _fail(span, error)


def _fail(span: Span, error: BaseException) -> None:
    """An error status saying what went wrong; a server bug's traceback too, as a span event."""
    if isinstance(error, ModelserveError):
        span.set_status(Status(StatusCode.ERROR, error.message))
        return
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    if isinstance(error, Exception):
        span.record_exception(error)


def begin_request(traceparent: str | None) -> None:
    """Give the request being handled its ids: the trace id of its caller's ``traceparent`` when it sent a
    valid one, else a random one, and a random span id. Its protocol's entry calls this first; a request
    that ``Tracing.request`` then traces takes its span's ids instead."""
    caller = _TRACEPARENT.fullmatch(traceparent) if traceparent else None
    trace_id = int(caller[1], 16) if caller is not None else 0
    # Zero is W3C's invalid id, from a caller or, once in 2**128 draws, from chance.
    _REQUEST_IDS.set((trace_id or _random_bits(128) or 1, _random_bits(64) or 1))


def request_ids() -> tuple[int, int] | None:
    """The (trace id, span id) of the request being handled, else of the current span, else None."""
    if (ids := _REQUEST_IDS.get()) is not None:
        return ids
    context = trace.get_current_span().get_span_context()
    return (context.trace_id, context.span_id) if context.is_valid else None


def current_trace_id() -> str | None:
    """The current request's trace id as 32 hex digits (what Jaeger searches by), or None outside one."""
    ids = request_ids()
    return format(ids[0], "032x") if ids is not None else None


def hex_ids(ids: tuple[int, int]) -> tuple[str, str]:
    """A (trace id, span id) pair as log lines and answers write them: 32 and 16 hex digits."""
    return format(ids[0], "032x"), format(ids[1], "016x")

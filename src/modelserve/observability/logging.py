"""Logs: one pipeline (structlog) for our own lines, the standard library's (uvicorn, grpc, asyncio)
and Python warnings, rendered as one JSON object per line (``LOG_FORMAT=json``, what the runbooks grep
with jq) or for a terminal (``console``).

Every JSON line has ``timestamp`` (ISO-8601, UTC), ``level``, ``logger`` and ``message``, the fields
of its event (``model``, ``latency_ms``, ``status``...) and ``exception`` when one is attached. A line
written for a request, any request, traced or not, has its ``trace_id`` (32 hex digits) and
``span_id`` (16): the caller's trace id when it sent a ``traceparent``, else one made up for the
request (observability/tracing.py). An error answer names the same ``trace_id`` (protocol/errors.py),
so ``grep <trace_id>`` finds every line of the request a caller complains about.
The access log writes one line per answered inference request, thinned by ``ACCESS_LOG_SAMPLE_RATE``.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from structlog.typing import Processor

from modelserve.errors import ModelserveError
from modelserve.observability.metrics import request_status
from modelserve.observability.tracing import hex_ids, request_ids

ACCESS_LOGGER = "modelserve.access"


def _dumps(document: Any, **_: Any) -> str:
    return orjson.dumps(document, default=str).decode()


def _add_trace_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if (ids := request_ids()) is not None:
        trace_id, span_id = hex_ids(ids)
        event.setdefault("trace_id", trace_id)
        event.setdefault("span_id", span_id)
    return event


def configure_logging(level: str, fmt: str) -> None:
    """Route every logger of the process through one handler on stderr, rendered as ``fmt``."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    finish: list[Processor]
    if fmt == "json":
        finish = [
            structlog.processors.format_exc_info,  # the traceback as text, under "exception"
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        finish = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
    )
    handler = JsonLines(sys.stderr) if fmt == "json" else logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "grpc", "asyncio"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    logging.captureWarnings(True)  # warnings.warn(...) becomes a "py.warnings" line like any other


class JsonLines(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler of ``LOG_FORMAT=json``. It also writes documents built whole by their caller: the
    access log's line is a flat dictionary, and passing it through a LogRecord and structlog's
    processors costs 25 µs where serialising it costs 3, on a path taken once per request."""

    def write_document(self, document: dict[str, Any]) -> None:
        """One JSON line, written under the handler's lock like every other record."""
        line = _dumps(document) + "\n"
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line)
            self.flush()


class AccessLog:
    """One INFO line per answered inference request, for a ``sample_rate`` share of them (0: none)."""

    def __init__(self, sample_rate: float) -> None:
        self._rate = sample_rate
        self._log = structlog.get_logger(ACCESS_LOGGER)
        self._enabled = logging.getLogger(ACCESS_LOGGER).isEnabledFor
        # With JSON logs and nothing else listening, the line goes straight to the handler; otherwise
        # through structlog and every handler, like any other line.
        handlers = logging.getLogger().handlers
        self._json = next((h for h in handlers if isinstance(h, JsonLines)), None) if len(handlers) == 1 else None

    def record(
        self, model: str, version: str, protocol: str, code: int | str, seconds: float, error: Exception | None
    ) -> None:
        """Write the request's line, unless sampling or the log level leaves it out."""
        if self._rate <= 0 or (self._rate < 1 and random.random() >= self._rate):
            return
        if not self._enabled(logging.INFO):
            return
        fields: dict[str, Any] = {"model": model, "version": version, "protocol": protocol}
        fields["status"] = request_status(code)
        fields.update(code=code, latency_ms=round(seconds * 1000, 3))
        if error is not None:  # formatted only for the lines that are written
            fields["error"] = (
                error.message if isinstance(error, ModelserveError) else f"internal error ({type(error).__name__})"
            )
        if self._json is None:
            self._log.info("inference request", **fields)
            return
        if (ids := request_ids()) is not None:
            fields["trace_id"], fields["span_id"] = hex_ids(ids)
        fields.update(
            message="inference request",
            level="info",
            logger=ACCESS_LOGGER,
            timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        self._json.write_document(fields)

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
With JSON logs (the default) its lines are written by a thread of their own, a batch every
``FLUSH_INTERVAL_S``: they can follow by that much the lines logged after them.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from structlog.typing import Processor

from modelserve.errors import ModelserveError
from modelserve.observability.metrics import request_status
from modelserve.observability.tracing import hex_ids, request_ids

ACCESS_LOGGER = "modelserve.access"
# Access lines waiting for their writer thread at most. One more is dropped and counted
# (model_serving_access_log_dropped_lines_total), never held: a stream that stops taking lines must not
# take the server's memory with it. Seconds of traffic at any rate one process answers.
QUEUE_LINES = 65_536
# How long an access line waits for its writer thread at most: what an operator tailing the log waits,
# and, at a few thousand requests a second, a write of a few hundred lines instead of one each.
FLUSH_INTERVAL_S = 0.05
# Lines rendered per write at most. The writer holds the GIL while it renders, and the event loop waits:
# a write, which lets it go, every millisecond or so.
WRITE_LINES = 256

# What a request leaves for its access line: time.time(), model, version, protocol, code, seconds, the
# error's message, (trace id, span id).
# The last item: a generation's own fields (tokens, time to first token, user), None for other requests.
_Line = tuple[float, str, str, str, int | str, float, str | None, tuple[int, int] | None, dict[str, Any] | None]
# orjson writes a UTC datetime as structlog's TimeStamper(fmt="iso", utc=True) does, in less time.
_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z


def _dumps(document: Any, **_: Any) -> str:
    return orjson.dumps(document, default=str).decode()


def _add_trace_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if (ids := request_ids()) is not None:
        trace_id, span_id = hex_ids(ids)
        event.setdefault("trace_id", trace_id)
        event.setdefault("span_id", span_id)
    return event


# What configure_logging was last given, so that a process the server starts (an engine process) logs
# as the server does.
_configured: dict[str, str] = {}


def configured() -> tuple[str, str] | None:
    """The level and format this process's logging was configured with; None where it never was."""
    return (_configured["level"], _configured["format"]) if _configured else None


def configure_logging(level: str, fmt: str) -> None:
    """Route every logger of the process through one handler on stderr, rendered as ``fmt``."""
    _configured.update(level=level, format=fmt)
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
    """The handler of ``LOG_FORMAT=json``. It also writes lines rendered by their caller: the access
    log's, a batch at a time. Passing each through a LogRecord and structlog's processors costs 25 µs,
    where rendering it costs 3, for a line written once per request."""

    def write_lines(self, text: str) -> None:
        """Whole lines, written under the handler's lock like every other record, so none cuts another."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(text)
            self.flush()


class AccessLog:
    """One INFO line per answered inference request, for a ``sample_rate`` share of them (0: none).

    With JSON logs and nothing else listening (the defaults), the request only queues its line's values,
    0.5 µs of the event loop's time; a writer thread renders them and writes them a batch at a time,
    3 µs a line, where a write and a flush per line on the event loop cost 7 to 8 (docs/PERFORMANCE.md).
    A line the queue has no room for is counted by ``on_dropped``. ``close`` writes what is queued; the
    server calls it at shutdown. Otherwise the line goes through structlog and every handler at once,
    like any other line.
    """

    def __init__(self, sample_rate: float, on_dropped: Callable[[int], None]) -> None:
        self._rate = sample_rate
        self._log = structlog.get_logger(ACCESS_LOGGER)
        self._enabled = logging.getLogger(ACCESS_LOGGER).isEnabledFor
        handlers = logging.getLogger().handlers
        only = handlers[0] if len(handlers) == 1 else None
        self._writer = _Writer(only, on_dropped) if isinstance(only, JsonLines) else None

    def record(
        self,
        model: str,
        version: str,
        protocol: str,
        code: int | str,
        seconds: float,
        error: Exception | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Queue or write the request's line, unless sampling or the log level leaves it out."""
        if self._rate <= 0 or (self._rate < 1 and random.random() >= self._rate):
            return
        if not self._enabled(logging.INFO):
            return
        message = None
        if error is not None:  # formatted only for the lines that are written
            message = (
                error.message if isinstance(error, ModelserveError) else f"internal error ({type(error).__name__})"
            )
        if self._writer is None:
            self._log.info(
                "inference request", **_fields(model, version, protocol, code, seconds, message), **(extra or {})
            )
            return
        # The ids live in the request's context: taken here, formatted by the writer.
        self._writer.put((time.time(), model, version, protocol, code, seconds, message, request_ids(), extra))

    def close(self) -> None:
        """Write every queued line and stop the writer thread (a later line starts another)."""
        if self._writer is not None:
            self._writer.close()


def _fields(
    model: str, version: str, protocol: str, code: int | str, seconds: float, error: str | None
) -> dict[str, Any]:
    """An access line's own fields, in the order its lines have always had them."""
    fields: dict[str, Any] = {
        "model": model,
        "version": version,
        "protocol": protocol,
        "status": request_status(code),
        "code": code,
        "latency_ms": round(seconds * 1000, 3),
    }
    if error is not None:
        fields["error"] = error
    return fields


class _Writer:
    """The access log's queue and the thread that renders and writes it.

    The thread starts with the first line, in the process that answers the request: each worker process
    of ``--workers N`` (spawned, or forked before serving) has its own. It is a daemon, so that a server
    stopped without ``close`` is not held up by it; the server's shutdown closes it.
    """

    def __init__(self, handler: JsonLines, on_dropped: Callable[[int], None]) -> None:
        self._handler = handler
        self._on_dropped = on_dropped
        # deque's append and popleft are atomic; its maxlen would drop the oldest lines silently.
        self._queue: deque[_Line] = deque()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()  # taken only to start or stop the thread, never for a line
        self._closing = threading.Event()

    def put(self, line: _Line) -> None:
        """Queue ``line``, or count it dropped when ``QUEUE_LINES`` are waiting already."""
        if len(self._queue) >= QUEUE_LINES:
            self._on_dropped(1)
            return
        self._queue.append(line)
        if self._thread is None:
            self._start()

    def close(self) -> None:
        """Stop the thread, then write what it left."""
        with self._starting:
            if (thread := self._thread) is None:
                return
            self._closing.set()
            thread.join()
            self._thread = None
            self._write()

    def _start(self) -> None:
        with self._starting:
            if self._thread is not None:
                return
            self._closing.clear()
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closing.wait(FLUSH_INTERVAL_S):
            self._write()

    def _write(self) -> None:
        pending = len(self._queue)  # what is queued now: lines that come meanwhile wait for the next round
        while pending > 0:
            lines = [self._queue.popleft() for _ in range(min(pending, WRITE_LINES))]
            pending -= len(lines)
            try:
                self._handler.write_lines(self._render(lines))
            except (OSError, ValueError):  # a closed or broken stream: the lines are lost, and counted
                self._on_dropped(len(lines))

    def _render(self, lines: list[_Line]) -> str:
        rendered = []
        for stamp, model, version, protocol, code, seconds, error, ids, extra in lines:
            document = _fields(model, version, protocol, code, seconds, error)
            if extra:
                document.update(extra)
            if ids is not None:
                document["trace_id"], document["span_id"] = hex_ids(ids)
            document["message"] = "inference request"
            document["level"] = "info"
            document["logger"] = ACCESS_LOGGER
            document["timestamp"] = datetime.fromtimestamp(stamp, UTC)
            rendered.append(orjson.dumps(document, default=str, option=_OPTIONS))
        return b"".join(rendered).decode()

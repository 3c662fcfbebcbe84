"""What the protocols share: built once by ``server/app.py`` and passed to each of them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from modelserve.config import Settings
from modelserve.errors import Classification, classify
from modelserve.history.recorder import TrafficRecorder
from modelserve.models.manager import ModelManager
from modelserve.observability.logging import AccessLog
from modelserve.observability.metrics import Metrics
from modelserve.observability.profiling import Profiler
from modelserve.observability.tracing import Tracing, finish_span

# The metrics' label of a request for a model the server does not know (docs/METRICS.md).
UNKNOWN_MODEL = "unknown"


@dataclass(eq=False)
class ServerState:
    """The running server: its settings, models, metrics, and whether startup loading has finished."""

    settings: Settings
    manager: ModelManager
    metrics: Metrics
    tracing: Tracing = field(default_factory=Tracing)
    profiler: Profiler = field(default_factory=Profiler)
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False  # startup loading has finished
    startup_error: str = ""
    draining: bool = False
    grpc_in_flight: int = 0  # gRPC inference requests received and not yet answered: a drain waits for them
    required: tuple[str, ...] = ()  # models named at startup: readiness needs each of them serving
    history: TrafficRecorder | None = None  # None: TRAFFIC_HISTORY off
    access_log: AccessLog = field(init=False)

    def __post_init__(self) -> None:
        self.access_log = AccessLog(self.settings.access_log_sample_rate, self.metrics.observe_access_log_dropped)

    def finish_request(
        self,
        model: str,
        version: str,
        protocol: str,
        code: int | str,
        seconds: float,
        error: Exception | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Account for one answered inference request: metrics, its span's outcome, its access log line,
        the traffic history.

        ``model`` is the name the caller sent. Metrics and the history are keyed by it only when the
        server knows that model (it has records of it, or the error says the repository holds it) and the
        caller's credentials were accepted; otherwise metrics count the request under ``model="unknown"``
        and the history leaves it out, so that callers cannot grow the label set or the table without
        bound. The access log and the span keep the name as sent.
        """
        known = error is None or _names_a_known_model(classify(error), self.manager, model)
        self.metrics.observe_request(model if known else UNKNOWN_MODEL, version, protocol, code, seconds, error)
        if self.history is not None and known:
            self.history.record_request(model, version, seconds, error)
        if self.tracing.enabled:
            finish_span(model, version, code, error)
        self.access_log.record(model, version, protocol, code, seconds, error, extra)

    def not_live(self) -> str | None:
        """Why the liveness probe should fail (memory above MEMORY_HARD_LIMIT_MB), or None."""
        return self.manager.watchdog.not_live()

    def not_started(self) -> str | None:
        """Why startup has not finished (the startup probe's reason), or None once it has."""
        if self.startup_error:
            return f"startup failed: {self.startup_error}"
        if not self.ready:
            return "server is starting: models are loading"
        return None

    def not_ready(self) -> str | None:
        """Why the server should receive no traffic now (the readiness probe's reason), or None."""
        if self.draining:
            return "server is shutting down: draining in-flight requests"
        if (reason := self.not_started()) is not None:
            return reason
        serving = {record.name for record in self.manager.ready()}
        missing = [name for name in self.required if name not in serving]
        if missing:
            return f"required model(s) not ready: {', '.join(missing)} (see /health for the reason)"
        return None


def _names_a_known_model(classified: Classification, manager: ModelManager, model: str) -> bool:
    return classified.trusted_name and (classified.model_exists or manager.knows(model))

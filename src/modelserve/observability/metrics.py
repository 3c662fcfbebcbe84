"""Prometheus metrics under the runbooks' names, on a registry passed in (no module globals), so any
number of servers can live in one test process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 0.5 ms to 10 s: fast CPU models and slow GPU batches land in distinct buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The collectors the server updates; the protocols call ``observe_request`` once per request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "model_serving_requests",
            "Inference requests answered, by outcome (status: success|error; code: HTTP status or gRPC code).",
            ["model", "version", "protocol", "status", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "model_serving_request_duration_seconds",
            "Time from receiving an inference request to having its response, in seconds.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "model_serving_batch_size",
            "Samples per runtime call made by the dynamic batcher.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.models_loaded = Gauge(
            "model_serving_models_loaded", "Model versions loaded and ready to serve.", registry=registry
        )

    def observe_request(self, model: str, version: str, protocol: str, code: int | str, seconds: float) -> None:
        """Count one answered request and its latency; ``code`` is an HTTP status or a gRPC code name."""
        status = "success" if code in (200, "OK") else "error"
        self.requests.labels(model, version, protocol, status, str(code)).inc()
        self.duration.labels(model, protocol).observe(seconds)

    def observe_batch(self, model: str, samples: int) -> None:
        """Record the size of one batch a model executed."""
        self.batch_size.labels(model).observe(samples)

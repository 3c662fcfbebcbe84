"""The pre-warming policy's figures (PREWARM_POLICY): what it loaded ahead, what of that went unused, and what
it was worth against lru on the same requests; the live pre-warmer (``prewarm/live.py``) reports to it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class PrewarmMetrics:
    """Collectors of the pre-warmer, on the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.prewarms = Counter(
            "model_serving_prewarm_loads",
            "Models loaded ahead of their requests by the pre-warming policy (PREWARM_POLICY).",
            ["model"],
            registry=registry,
        )
        self.prewarms_unused = Counter(
            "model_serving_prewarm_unused_loads",
            "Pre-loads the pre-warming policy made that no request used before the model was unloaded again: "
            "memory and load time spent for nothing.",
            ["model"],
            registry=registry,
        )
        self.lru_cold_starts = Counter(
            "model_serving_prewarm_lru_cold_starts",
            "Cold starts an lru cache of the same budget would have had on the same requests, replayed in-process "
            "beside the pre-warming policy: its counterfactual.",
            ["model"],
            registry=registry,
        )
        self.cold_starts_avoided = Gauge(
            "model_serving_prewarm_cold_starts_avoided",
            "Cold starts the pre-warming policy avoided against lru on the same requests since the server started "
            "(model_serving_prewarm_lru_cold_starts_total less model_serving_cold_starts_total); "
            "negative: it had more.",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )

    def observe_prewarm(self, model: str) -> None:
        """Count a model the pre-warming policy loaded ahead of its requests."""
        self.prewarms.labels(model).inc()

    def observe_unused_prewarm(self, model: str) -> None:
        """Count a pre-load that no request used before the model was unloaded."""
        self.prewarms_unused.labels(model).inc()

    def observe_counterfactual(self, model: str, lru_cold: bool, avoided: int) -> None:
        """Count a request lru would have found cold, and set the cold starts avoided against lru so far."""
        if lru_cold:
            self.lru_cold_starts.labels(model).inc()
        self.cold_starts_avoided.labels(model).set(avoided)

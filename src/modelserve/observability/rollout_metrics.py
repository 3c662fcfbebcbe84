"""Each model's newest progressive rollout (``rollout/``), and what its analyses decided."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RolloutMetrics:
    """Collectors of the rollout controller, on the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rollout_weight = Gauge(
            "model_serving_rollout_weight",
            "Percentage of a model's requests naming no version that its rollout's new version takes.",
            ["model", "version", "state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.rollout_checks = Counter(
            "model_serving_rollout_checks",
            "A rollout's analyses, by outcome (pass, hold, breach, wait).",
            ["model", "outcome"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "model_serving_rollout_rollbacks",
            "Rollouts rolled back, by cause (error_rate, latency, not_serving, load_failed, aborted).",
            ["model", "cause"],
            registry=registry,
        )
        self._rollout_series: dict[str, tuple[str, str]] = {}

    def observe_rollout(self, model: str, version: int, state: str, weight: int) -> None:
        """Show a model's newest rollout: its new version's share, labelled with its state."""
        if (shown := self._rollout_series.get(model)) is not None and shown != (str(version), state):
            self.rollout_weight.remove(model, *shown)
        self._rollout_series[model] = (str(version), state)
        self.rollout_weight.labels(model, str(version), state).set(weight)

    def observe_rollout_check(self, model: str, outcome: str) -> None:
        """Count one analysis of a rollout."""
        self.rollout_checks.labels(model, outcome).inc()

    def observe_rollback(self, model: str, cause: str) -> None:
        """Count a rollout rolled back."""
        self.rollbacks.labels(model, cause).inc()

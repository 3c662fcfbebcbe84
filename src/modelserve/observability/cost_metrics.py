"""Cost per region and model (PRICES_FILE): the usage database priced by ``regions/cost_watch.py``, every worker
alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

if TYPE_CHECKING:
    from modelserve.regions.cost import CostFigures


class CostMetrics:
    """The cost gauges, on the server's registry; series of what is no longer priced are removed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        cost_labels = ["region", "model"]
        self.daily_cost = Gauge(
            "model_serving_daily_cost",
            "Cost of a model in a region over the last 24 hours, in the price table's currency.",
            cost_labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.cost_anomaly = Gauge(
            "model_serving_cost_anomaly_zscore",
            "Robust z-score (median/MAD) of a model's last 24 hours of cost in a region against its trailing days.",
            cost_labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.cost_budget = Gauge(
            "model_serving_cost_budget",
            "A budget of the price table for a region and model ('*': all) per UTC day or month.",
            [*cost_labels, "period"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.cost_budget_spent = Gauge(
            "model_serving_cost_budget_spent",
            "What a budget's region and model have cost in its current UTC day or month so far.",
            [*cost_labels, "period"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._cost_series: dict[Gauge, set[tuple[str, ...]]] = {}

    def observe_costs(self, figures: CostFigures) -> None:
        """Export fresh cost figures; series of regions, models and budgets no longer in them go."""
        budgets = {(b.budget.region, b.budget.model, b.budget.period): b for b in figures.budgets}
        values: dict[Gauge, dict[tuple[str, ...], float]] = {
            self.daily_cost: {tuple(key): cost for key, cost in figures.daily.items()},
            self.cost_anomaly: {tuple(key): z for key, z in figures.zscores.items()},
            self.cost_budget: {key: each.budget.amount for key, each in budgets.items()},
            self.cost_budget_spent: {key: each.spent for key, each in budgets.items()},
        }
        for gauge, series in values.items():
            for gone in self._cost_series.get(gauge, set()) - series.keys():
                gauge.remove(*gone)
            for labels, value in series.items():
                gauge.labels(*labels).set(value)
            self._cost_series[gauge] = set(series)

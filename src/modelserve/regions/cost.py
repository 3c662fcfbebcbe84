"""Cost per region and model: usage from the database priced by the price table, each model's daily cost
judged against its own trailing days (a robust z-score), and spending against the budgets.

Everything is read from ``usage_buckets``, which the servers and the replicator write as they go: a
report is a query and a multiplication, never an estimate.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from modelserve.regions import usage_store
from modelserve.regions.prices import Budget, Cost, PriceTable, cost_of
from modelserve.regions.usage import Usage

if TYPE_CHECKING:
    from sqlalchemy import Engine

DAY_S = 86_400
# 1.4826 x MAD estimates the standard deviation of normal data (Iglewicz and Hoaglin's modified z-score).
MAD_SCALE = 1.4826
# Costs that hardly move have a MAD near zero, which would make a cent's change an anomaly: the spread is
# never taken below this share of the median, so a stable cost must move by about 3.5 x 5 % to count.
MIN_RELATIVE_SPREAD = 0.05

RegionModel = tuple[str, str]


@dataclass(slots=True)
class Line:
    """Usage and cost of one group (a region, a model, or both) over a window."""

    region: str
    model: str
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)

    @property
    def per_1k_inferences(self) -> float | None:
        """Cost of a thousand inferences (samples), when there were any."""
        return self.cost.total / self.usage.inferences * 1000 if self.usage.inferences else None

    def json(self) -> dict[str, object]:
        """The line as ``--json`` prints it."""
        return {
            "region": self.region,
            "model": self.model,
            "requests": self.usage.requests,
            "inferences": self.usage.inferences,
            "tokens": self.usage.tokens,
            "compute_seconds": self.usage.compute_seconds,
            "memory_gb_hours": self.usage.memory_byte_seconds / 3.6e12,
            "transfer_bytes": self.usage.transfer_bytes,
            "compute_cost": self.cost.compute,
            "memory_cost": self.cost.memory,
            "transfer_cost": self.cost.transfer,
            "cost": self.cost.total,
            "cost_per_1k_inferences": self.per_1k_inferences,
        }


def report(
    engine: Engine, table: PriceTable, since: float, until: float, by_region: bool, by_model: bool
) -> list[Line]:
    """Usage and cost in ``[since, until)`` grouped by region, by model, or both; most expensive first.
    A region or model left out of the grouping reads ``*``."""
    lines: dict[RegionModel, Line] = {}
    for rows in usage_store.by_day(engine, since, until).values():
        for row in rows:
            key = (row.region if by_region else "*", row.model if by_model else "*")
            line = lines.setdefault(key, Line(*key))
            line.usage.add(row.usage)
            line.cost += cost_of(table, row.region, row.device, row.usage)
    return sorted(lines.values(), key=lambda line: (-line.cost.total, line.region, line.model))


def daily_costs(engine: Engine, table: PriceTable, now: float, days: int) -> dict[RegionModel, list[float]]:
    """Each region and model's cost per 24 hours, ``days`` of them counted back from ``now`` (index 0:
    the last 24 hours), from its first day with usage on; older days are absent, not zero."""
    by_day = usage_store.by_day(engine, now - days * DAY_S, now)
    costs: dict[RegionModel, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for day, rows in by_day.items():
        for row in rows:
            costs[row.region, row.model][day] += cost_of(table, row.region, row.device, row.usage).total
    return {key: [per_day.get(day, 0.0) for day in range(max(per_day) + 1)] for key, per_day in costs.items()}


def robust_z(value: float, history: Iterable[float]) -> float | None:
    """How far ``value`` lies from the median of ``history``, in robust standard deviations (MAD-based);
    None when the history is all zeros, which gives no scale to measure by."""
    past = list(history)
    median = statistics.median(past)
    spread = max(MAD_SCALE * statistics.median(abs(x - median) for x in past), MIN_RELATIVE_SPREAD * abs(median))
    if spread == 0:
        return None
    return (value - median) / spread


def anomalies(daily: dict[RegionModel, list[float]], table: PriceTable) -> dict[RegionModel, float]:
    """The z-score of each region and model's last 24 hours against its trailing ``window_days`` days,
    for those with at least ``min_days`` days of history."""
    settings = table.anomaly
    scores = {}
    for key, days in daily.items():
        history = days[1 : settings.window_days + 1]
        if len(history) >= settings.min_days and (z := robust_z(days[0], history)) is not None:
            scores[key] = z
    return scores


@dataclass(frozen=True, slots=True)
class Spending:
    """A budget and what its current period (UTC day or month, so far) has cost."""

    budget: Budget
    spent: float

    @property
    def share(self) -> float:
        """Spent over the amount (budgets are above zero)."""
        return self.spent / self.budget.amount


def spending(engine: Engine, table: PriceTable, now: float) -> list[Spending]:
    """Every budget of the table with what its current period has cost so far."""
    if not table.budgets:
        return []
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    starts = {"day": today.timestamp(), "month": today.replace(day=1).timestamp()}
    spent: dict[str, dict[RegionModel, float]] = {}
    for period, start in starts.items():
        totals: dict[RegionModel, float] = defaultdict(float)
        for rows in usage_store.by_day(engine, start, now + 1).values():
            for row in rows:
                totals[row.region, row.model] += cost_of(table, row.region, row.device, row.usage).total
        spent[period] = totals
    return [
        Spending(budget, sum(cost for (r, m), cost in spent[budget.period].items() if budget.covers(r, m)))
        for budget in table.budgets
    ]


@dataclass(frozen=True, slots=True)
class CostFigures:
    """What the server exports: each region and model's last 24 hours and its z-score, and the budgets."""

    daily: dict[RegionModel, float]
    zscores: dict[RegionModel, float]
    budgets: list[Spending]


def figures(engine: Engine, table: PriceTable, now: float | None = None) -> CostFigures:
    """The figures at ``now`` (default: the current time)."""
    at = time.time() if now is None else now
    daily = daily_costs(engine, table, at, table.anomaly.window_days + 1)
    return CostFigures(
        {key: days[0] for key, days in daily.items()}, anomalies(daily, table), spending(engine, table, at)
    )

"""A real server with PRICES_FILE exports the cost figures of its database on /metrics: each region and
model's last 24 hours, the anomaly score of a spike against two quiet weeks, and a budget overspent."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from modelserve.db import open_engine
from modelserve.history import store
from modelserve.observability.metrics import Metrics
from modelserve.regions import usage_store
from modelserve.regions.cost import CostFigures, Spending
from modelserve.regions.prices import Budget
from modelserve.regions.usage import CPU, Usage, UsageKey, bucket_of
from tests.e2e.server import serve

DAY = 86_400
PRICES = """
regions:
  eu-west-1: {cpu_second: 0.001}
budgets:
  - {region: eu-west-1, model: resnet, daily: 2}
anomaly: {window_days: 14, min_days: 7}
"""


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(("model_serving_daily_cost", "model_serving_cost_", "model_serving_db_pool_size"))
    }


def test_the_server_exports_daily_cost_anomalies_and_budgets(built_repository: Path, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'usage.sqlite3'}"
    engine = open_engine(database_url)
    store.migrate(engine)
    now = time.time()
    rows: dict[UsageKey, Usage] = {}
    for day in range(15):  # two quiet weeks of 1000 s a day, then 5000 s in the last 24 hours
        seconds = 5000.0 if day == 0 else 1000.0 + 10 * (day % 3)
        rows["resnet", "1", "eu-west-1", CPU, "", bucket_of(now - day * DAY - 2 * 3600)] = Usage(
            compute_seconds=seconds
        )
    usage_store.write(engine, rows)
    engine.dispose()
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)

    env = {"DATABASE_URL": database_url, "PRICES_FILE": str(prices), "REGION": "eu-west-1", "COST_REFRESH_SEC": "0.2"}
    with serve(built_repository, tmp_path / "server.log", env=env) as server:
        deadline = time.monotonic() + 20
        found = samples(server.url)
        while ("model_serving_cost_anomaly_zscore", (("model", "resnet"), ("region", "eu-west-1"))) not in found:
            assert time.monotonic() < deadline, f"no cost figures within 20 s:\n{server.output()}"
            time.sleep(0.1)
            found = samples(server.url)

        assert found["model_serving_daily_cost", (("model", "resnet"), ("region", "eu-west-1"))] == 5.0
        assert found["model_serving_cost_anomaly_zscore", (("model", "resnet"), ("region", "eu-west-1"))] > 3.5
        budget = (("model", "resnet"), ("period", "day"), ("region", "eu-west-1"))
        assert found["model_serving_cost_budget", budget] == 2.0
        assert found["model_serving_cost_budget_spent", budget] >= 0, "what today (UTC) has cost so far"
        assert found["model_serving_db_pool_size", (("pool", "cost"),)] == 5.0, "its engine is one the pools list"


def test_a_price_table_that_does_not_load_stops_startup_naming_it(built_repository: Path, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("regions: {eu-west-1: {cpu_seconds: 1}}")
    with (
        pytest.raises(AssertionError, match="server exited") as caught,
        serve(built_repository, tmp_path / "server.log", env={"PRICES_FILE": str(prices)}, ready_timeout=30),
    ):
        pass
    assert "PRICES_FILE" in str(caught.value)
    assert "cpu_seconds: Extra inputs are not permitted" in str(caught.value)


def test_regions_models_and_budgets_gone_from_the_figures_leave_the_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    budget = Budget(region="eu-west-1", daily=2)
    metrics.costs.observe_costs(
        CostFigures(
            {("eu-west-1", "a"): 1.0, ("eu-west-1", "b"): 2.0}, {("eu-west-1", "a"): 4.0}, [Spending(budget, 3)]
        )
    )
    a, b = {"region": "eu-west-1", "model": "a"}, {"region": "eu-west-1", "model": "b"}
    day = {"region": "eu-west-1", "model": "*", "period": "day"}
    assert registry.get_sample_value("model_serving_daily_cost", b) == 2.0
    assert registry.get_sample_value("model_serving_cost_budget_spent", day) == 3.0

    metrics.costs.observe_costs(CostFigures({("eu-west-1", "a"): 1.5}, {}, []))

    assert registry.get_sample_value("model_serving_daily_cost", a) == 1.5
    assert registry.get_sample_value("model_serving_daily_cost", b) is None
    assert registry.get_sample_value("model_serving_cost_anomaly_zscore", a) is None, "too little history now"
    assert registry.get_sample_value("model_serving_cost_budget", day) is None

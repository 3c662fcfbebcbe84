"""Cost from recorded usage, on SQLite and a real PostgreSQL: the price table's arithmetic and its errors,
reports by region and model with the cost of 1,000 inferences, robust z-scores, and budgets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from modelserve.db import open_engine
from modelserve.history import store
from modelserve.regions import cost, usage_store
from modelserve.regions.prices import Cost, PriceError, PriceTable, cost_of, load_prices
from modelserve.regions.usage import CPU, NETWORK, USAGE_BUCKET_S, Usage, UsageKey, record_transfer

DAY = 86_400
NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC).timestamp()  # the 10th, mid-afternoon UTC
PRICES = """
currency: EUR
regions:
  us-east-1:
    cpu_second: 0.001
    gpu_second: {H100: 0.01, default: 0.005}
    memory_gb_hour: 0.36
    transfer_gb: 0.02
  "*":
    cpu_second: 0.002
budgets:
  - {region: us-east-1, daily: 10}
  - {model: mlp, monthly: 100}
"""


@pytest.fixture
def table(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES)
    return load_prices(path)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    store.migrate(engine)
    yield engine
    engine.dispose()


def at(seconds_ago: float) -> int:
    return int((NOW - seconds_ago) // USAGE_BUCKET_S) * USAGE_BUCKET_S


def write(engine: Engine, rows: dict[UsageKey, Usage]) -> None:
    usage_store.write(engine, rows)


def test_usage_is_priced_by_device_memory_held_and_bytes_sent(table: PriceTable) -> None:
    assert cost_of(table, "us-east-1", CPU, Usage(compute_seconds=100, memory_byte_seconds=1e9 * 3600)) == Cost(
        compute=0.1, memory=0.36
    )
    assert cost_of(table, "us-east-1", "gpu:H100 80GB HBM3", Usage(compute_seconds=10)).compute == 0.1
    assert cost_of(table, "us-east-1", "gpu:A10G", Usage(compute_seconds=10)).compute == 0.05, "the default"
    assert cost_of(table, "us-east-1", NETWORK, Usage(transfer_bytes=5 * 10**9)).transfer == 0.1
    assert cost_of(table, "ap-south-1", CPU, Usage(compute_seconds=10)).compute == 0.02, "the '*' entry"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("regions: {us-east-1: {cpu_secnd: 1}}", r"regions\.us-east-1\.cpu_secnd: Extra inputs are not permitted"),
        ("regions: {us-east-1: {cpu_second: -1}}", r"cpu_second: Input should be greater than or equal to 0"),
        ("regions: {}\nbudgets: [{daily: 1, monthly: 30}]", "exactly one of daily or monthly"),
        ("regions: {}\nbudgets: [{monthly: 0}]", r"budgets\.0\.monthly: Input should be greater than 0"),
        ("regions: [", "is not YAML"),
    ],
)
def test_a_bad_price_table_says_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(PriceError, match=message):
        load_prices(path)


def test_usage_the_table_cannot_price_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("regions: {us-east-1: {gpu_second: {A100: 1}}}")
    table = load_prices(path)
    with pytest.raises(PriceError, match="no gpu_second for 'H100' in us-east-1"):
        cost_of(table, "us-east-1", "gpu:H100", Usage(compute_seconds=1))
    with pytest.raises(PriceError, match="no prices for region 'eu-west-1'"):
        cost_of(table, "eu-west-1", CPU, Usage(compute_seconds=1))


def test_reports_group_by_region_or_model_with_the_cost_of_a_thousand_inferences(
    engine: Engine, table: PriceTable
) -> None:
    write(
        engine,
        {
            ("mlp", "1", "us-east-1", CPU, "", at(DAY)): Usage(requests=1000, inferences=4000, compute_seconds=400),
            ("mlp", "1", "eu-west-1", CPU, "", at(2 * DAY)): Usage(requests=10, inferences=10, compute_seconds=50),
            ("resnet", "2", "us-east-1", "gpu:H100", "", at(3600)): Usage(
                requests=5, inferences=5, compute_seconds=100
            ),
            ("mlp", "1", "us-east-1", CPU, "", at(8 * DAY)): Usage(requests=99, compute_seconds=1e6),  # too old
        },
    )
    record_transfer(engine, "resnet", "2", "us-east-1", "eu-west-1", 10**9, at=NOW - 60)

    by_region = cost.report(engine, table, NOW - 7 * DAY, NOW, by_region=True, by_model=False)
    by_model = {line.model: line for line in cost.report(engine, table, NOW - 7 * DAY, NOW, False, True)}

    assert [(line.region, round(line.cost.total, 9)) for line in by_region] == [("us-east-1", 1.42), ("eu-west-1", 0.1)]
    assert by_model["mlp"].usage.requests == 1010
    assert by_model["mlp"].per_1k_inferences == pytest.approx(0.5 / 4010 * 1000)
    assert by_model["resnet"].cost == Cost(compute=1.0, transfer=0.02)
    assert by_model["resnet"].per_1k_inferences == pytest.approx(1.02 / 5 * 1000)


def test_the_robust_z_score_measures_in_mads_and_never_below_a_twentieth_of_the_median() -> None:
    assert cost.robust_z(10, [1, 2, 3, 4, 5, 6, 7]) == pytest.approx(6 / (1.4826 * 2))
    assert cost.robust_z(10.5, [10.0] * 14) == pytest.approx(1.0), "a flat history: 5 % of the median"
    assert cost.robust_z(100, [1, 1, 1, 1, 1, 1, 1000]) == pytest.approx(99 / 0.05)
    assert cost.robust_z(3, [0.0] * 10) is None, "no scale to measure by"


def test_a_spike_against_the_trailing_days_scores_high_and_a_short_history_none(
    engine: Engine, table: PriceTable
) -> None:
    rows: dict[UsageKey, Usage] = {}
    for day in range(15):
        seconds = 1000.0 + 10 * (day % 3)
        rows["mlp", "1", "us-east-1", CPU, "", at(day * DAY + 60)] = Usage(
            compute_seconds=seconds * (5 if day == 0 else 1)
        )
        rows["new", "1", "us-east-1", CPU, "", at(day * DAY + 60)] = (
            Usage(compute_seconds=seconds) if day < 5 else Usage()
        )
    write(engine, {key: usage for key, usage in rows.items() if not usage.is_empty()})

    figures = cost.figures(engine, table, NOW)

    assert figures.zscores.keys() == {("us-east-1", "mlp")}, "'new' has 4 days of history, fewer than min_days"
    assert figures.zscores["us-east-1", "mlp"] > table.anomaly.threshold
    assert figures.daily["us-east-1", "mlp"] == pytest.approx(5.0)
    assert figures.daily["us-east-1", "new"] == pytest.approx(1.0)


def test_budgets_count_the_utc_day_or_month_so_far(engine: Engine, table: PriceTable) -> None:
    midnight = datetime(2026, 3, 10, tzinfo=UTC).timestamp()
    write(
        engine,
        {
            ("mlp", "1", "us-east-1", CPU, "", int(midnight)): Usage(compute_seconds=3000),  # today: 3
            ("mlp", "1", "us-east-1", CPU, "", int(midnight) - 3600): Usage(compute_seconds=7000),  # yesterday: 7
            ("mlp", "1", "eu-west-1", CPU, "", int(midnight) - 5 * DAY): Usage(compute_seconds=500),  # this month: 1
            ("mlp", "1", "eu-west-1", CPU, "", int(midnight) - 10 * DAY): Usage(compute_seconds=9e6),  # February
            ("other", "1", "us-east-1", CPU, "", int(midnight) + 3600): Usage(compute_seconds=2000),  # today: 2
        },
    )

    daily, monthly = cost.spending(engine, table, NOW)

    assert daily.budget.period == "day"
    assert daily.spent == pytest.approx(5.0)
    assert daily.share == pytest.approx(0.5)
    assert monthly.budget.period == "month"
    assert monthly.spent == pytest.approx(11.0), "mlp in every region"

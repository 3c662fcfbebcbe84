"""The runbook's `python -m src.cost.cost_analyzer` and `modelserve regions cost`, run as an operator runs
them, from the repository root, on the usage a real server recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import serve, stop

ROOT = Path(__file__).resolve().parents[2]
MODELSERVE = Path(sys.executable).parent / "modelserve"
MLP = {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": [0.0] * 32}]}
PRICES = """
currency: USD
regions:
  eu-west-1: {cpu_second: 0.5, memory_gb_hour: 0.01, transfer_gb: 0.02}
budgets:
  - {region: eu-west-1, daily: 0.000001}
"""


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env}
    )


@pytest.fixture(scope="module")
def recorded(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PRICES_FILE and DATABASE_URL of a database a real server in eu-west-1 recorded 6 requests in."""
    root = tmp_path_factory.mktemp("cost")
    database_url = f"sqlite:///{root / 'usage.sqlite3'}"
    env = {"DATABASE_URL": database_url, "REGION": "eu-west-1", "MODEL_CONTROL_MODE": "explicit"}
    with serve(built_repository, root / "server.log", "--load-model", "mlp", env=env) as server:
        for _ in range(6):
            assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=MLP).status_code == 200
        stop(server.process, 30)
        assert server.process.returncode == 0, server.output()
    (root / "prices.yaml").write_text(PRICES)
    return {"PRICES_FILE": str(root / "prices.yaml"), "DATABASE_URL": database_url}


def test_the_runbook_command_prints_cost_per_region_and_per_model(recorded: dict[str, str]) -> None:
    result = run([sys.executable, "-m", "src.cost.cost_analyzer", "--days", "7", "--by-region"], recorded)

    assert result.returncode == 0, result.stderr
    assert "Cost per region in USD, last 7 day(s)" in result.stdout
    assert "eu-west-1" in result.stdout
    assert "Cost per model in USD" in result.stdout, "the cost of 1,000 inferences per model comes with it"
    assert "Budgets" in result.stdout


def test_json_gives_the_recorded_usage_and_its_cost(recorded: dict[str, str]) -> None:
    result = run([str(MODELSERVE), "regions", "cost", "--days", "1", "--by-model", "--json"], recorded)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (mlp,) = [line for line in report["lines"] if line["model"] == "mlp"]
    assert (mlp["requests"], mlp["inferences"]) == (6, 12)
    assert mlp["compute_cost"] == pytest.approx(mlp["compute_seconds"] * 0.5)
    assert mlp["compute_cost"] > 0
    assert mlp["cost_per_1k_inferences"] == pytest.approx(mlp["cost"] / 12 * 1000)
    (budget,) = report["budgets"]
    assert budget["spent"] > budget["budget"]


def test_without_a_price_table_the_command_says_how_to_give_one(recorded: dict[str, str]) -> None:
    result = run([sys.executable, "-m", "src.cost.cost_analyzer", "--days", "7"], {**recorded, "PRICES_FILE": ""})

    assert result.returncode == 2
    assert "pass --prices-file PATH or set PRICES_FILE" in result.stderr


def test_a_region_the_table_does_not_price_is_named(recorded: dict[str, str], tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("regions: {us-east-1: {cpu_second: 1}}")
    result = run([str(MODELSERVE), "regions", "cost"], {**recorded, "PRICES_FILE": str(prices)})

    assert result.returncode == 2
    assert "no prices for region 'eu-west-1'" in result.stderr


def test_a_bad_server_setting_is_named_rather_than_a_traceback(recorded: dict[str, str]) -> None:
    env = {**recorded, "DATABASE_URL": "", "MAX_BATCH_SIZE": "lots"}
    result = run([str(MODELSERVE), "regions", "cost"], env)

    assert result.returncode == 2
    assert "invalid setting MAX_BATCH_SIZE='lots'" in result.stderr

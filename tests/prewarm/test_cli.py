"""``modelserve prewarm`` end to end: generate a trace family, replay it, read the JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from modelserve.cli import app

KEYS = {
    "policy",
    "requests",
    "cold_starts",
    "cold_start_rate",
    "memory_mb_seconds",
    "idle_memory_mb_seconds",
    "gpu_memory_mb_seconds",
    "gpu_idle_memory_mb_seconds",
    "loads",
    "evictions",
    "cold_start_delay_p50_s",
    "cold_start_delay_p99_s",
}


def test_generate_then_simulate_every_policy_as_json(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["prewarm", "generate", "mixed", "--out", str(tmp_path), "--models", "10", "--days", "1"])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "trace.csv").is_file()
    common = ["--trace", str(tmp_path / "trace.csv"), "--models", str(tmp_path / "models.csv")]
    ran = runner.invoke(
        app, ["prewarm", "simulate", *common, "--memory-budget-mb", "5000", "--policy", "all", "--json"]
    )
    assert ran.exit_code == 0, ran.output
    body = json.loads(ran.stdout)
    assert body["memory_budget_mb"] == 5000
    assert [r["policy"] for r in body["results"]] == ["lru", "hybrid-histogram", "predictive"]
    requests = len((tmp_path / "trace.csv").read_text().splitlines()) - 1
    for result in body["results"]:
        assert set(result) == KEYS
        assert result["requests"] == requests
        assert 0 < result["cold_starts"] <= requests
    table = runner.invoke(app, ["prewarm", "simulate", *common, "--memory-budget-mb", "5000", "--policy", "lru"])
    assert table.exit_code == 0
    assert "lru" in table.stdout
    assert "predictive" not in table.stdout


def test_bad_arguments_get_a_message_that_says_what_to_fix(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["prewarm", "generate", "rare", "--out", str(tmp_path), "--models", "4", "--days", "1"])
    common = ["--trace", str(tmp_path / "trace.csv"), "--models", str(tmp_path / "models.csv")]
    unknown = runner.invoke(app, ["prewarm", "simulate", *common, "--memory-budget-mb", "5000", "--policy", "fifo"])
    assert unknown.exit_code == 2
    assert "unknown policy fifo; choose from lru, hybrid-histogram, predictive or all" in unknown.output
    tiny = runner.invoke(app, ["prewarm", "simulate", *common, "--memory-budget-mb", "1"])
    assert tiny.exit_code == 2
    assert "larger than the 1.0 MB budget" in tiny.output
    neither = runner.invoke(
        app, ["prewarm", "simulate", "--models", str(tmp_path / "models.csv"), "--memory-budget-mb", "9"]
    )
    assert neither.exit_code == 2
    assert "give one of --trace FILE or --azure FILE" in neither.output
    family = runner.invoke(app, ["prewarm", "generate", "weekly", "--out", str(tmp_path)])
    assert family.exit_code == 2
    assert "unknown trace family 'weekly'" in family.output

"""Queries that other programs send to Prometheus (prometheus-adapter's, Flagger's), evaluated by promtool
on series a test writes, so that a test checks both that Prometheus parses them and what they answer."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import tool

# The scrape interval of the ServiceMonitors, which the series are sampled at.
INTERVAL = "15s"


def sample(labels: str, value: float) -> dict[str, Any]:
    """An expected sample of a case: its labels in PromQL's notation (``{pod="a"}``) and its value."""
    return {"labels": labels, "value": value}


def case(expr: str, eval_time: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``expr`` evaluated at ``eval_time`` must answer exactly ``samples`` (none: an empty answer)."""
    return {"expr": expr, "eval_time": eval_time, "exp_samples": samples}


def evaluate(folder: Path, series: dict[str, str], cases: list[dict[str, Any]]) -> None:
    """Run ``cases`` on ``series`` (a series in PromQL's notation → promtool's values, ``0+30x8``) in
    ``folder``; fails with promtool's report when an expression does not parse or answers otherwise."""
    test = {
        "rule_files": [],
        "tests": [
            {
                "interval": INTERVAL,
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "promql_expr_test": cases,
            }
        ],
    }
    path = folder / "queries.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [tool("promtool"), "test", "rules", path.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
        check=False,
    )
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}\n{result.stderr}"
    assert "SUCCESS" in result.stdout

"""Cross-region probes: a real server of us-east-1 probes a real server of eu-west-1 and an address where
nothing answers, and exports what it sees; a server asked to probe without the regions is refused."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from modelserve.config import Settings, describe_error
from tests.builders import scale_onnx
from tests.deploy import promql
from tests.deploy.test_prometheus_live import GRAFANA, _prometheus
from tests.e2e.server import free_port, serve
from tests.regions.test_service import wait_for

pytestmark = pytest.mark.e2e
REGIONS_ROW = {"Region availability (probes)", "Cross-region latency p99", "Probe failures"}


def regions_file(path: Path, endpoints: dict[str, str]) -> Path:
    document = {
        "regions": [
            {"name": name, "priority": index + 1, "store": {"bucket": f"models-{name}"}, "endpoints": [url]}
            for index, (name, url) in enumerate(endpoints.items())
        ]
    }
    path.write_text(yaml.safe_dump(document))
    return path


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name{labels}`` (labels in any order), None when it is absent."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def scrape_until(url: str, condition: Callable[[str], bool], timeout_s: float = 20) -> str:
    """The server's /metrics once ``condition`` holds of it (probes run on their own interval)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        if condition(text):
            return text
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.05)


def test_a_server_probes_the_other_regions_and_exports_latency_and_availability(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    scale_onnx(repository / "scale" / "1" / "model.onnx")
    with serve(repository, tmp_path / "eu.log", env={"REGION": "eu-west-1"}) as eu:
        path = regions_file(
            tmp_path / "regions.yaml",
            {
                "us-east-1": "http://127.0.0.1:1",  # its own endpoint: never probed
                "eu-west-1": eu.url,
                "ap-southeast-1": f"http://127.0.0.1:{free_port()}",  # nothing listens
            },
        )
        env = {
            "REGION": "us-east-1",
            "REGIONS_FILE": str(path),
            "PROBE_MODEL": "scale",
            "PROBE_INTERVAL_SEC": "0.1",
            "PROBE_TIMEOUT_SEC": "0.5",
        }
        with serve(repository, tmp_path / "us.log", env=env) as us:
            edges = {"source": "us-east-1"}
            text = scrape_until(
                us.url,
                lambda t: (
                    sample(t, "model_serving_region_probe_up", **edges, target="eu-west-1") == 1
                    and sample(t, "model_serving_region_probe_up", **edges, target="ap-southeast-1") == 0
                ),
            )
            for kind in ("health", "infer"):
                count = sample(
                    text, "model_serving_region_probe_duration_seconds_count", **edges, kind=kind, target="eu-west-1"
                )
                assert count is not None, text
                assert count >= 1, text
            refused = {"target": "ap-southeast-1", "kind": "health", "reason": "connection"}
            assert (sample(text, "model_serving_region_probe_failures_total", **edges, **refused) or 0) >= 1
            assert sample(text, "model_serving_region_probe_up", source="us-east-1", target="us-east-1") is None
            with _prometheus(us, tmp_path) as (prometheus, _):
                queries = [q for q in promql.dashboard_queries() if q.where.split("'")[1] in REGIONS_ROW]
                queries += [q for q in promql.rule_queries() if "region_probe" in q.expr]
                assert len(queries) == 5
                for item in queries:  # each parses and has data; a threshold's comparison may leave none
                    expr = promql.concrete(item.expr, GRAFANA)
                    wait_for(lambda e=expr: bool(query(prometheus, e)) or "> " in e, f"data for {item.where}", 20)

            os.kill(eu.process.pid, signal.SIGSTOP)  # hung: its probes time out
            try:
                timed_out = {"target": "eu-west-1", "kind": "health", "reason": "timeout"}
                scrape_until(
                    us.url,
                    lambda t: (
                        sample(t, "model_serving_region_probe_up", **edges, target="eu-west-1") == 0
                        and (sample(t, "model_serving_region_probe_failures_total", **edges, **timed_out) or 0) >= 1
                    ),
                )
            finally:
                os.kill(eu.process.pid, signal.SIGCONT)
    assert "region eu-west-1 fails probes from us-east-1" in us.output()
    assert "region ap-southeast-1 fails probes from us-east-1" in us.output()


def test_probes_without_the_regions_or_outside_them_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(PROBE_MODEL="scale")  # type: ignore[call-arg]
    assert "set REGIONS_FILE too" in describe_error(caught.value)

    path = regions_file(tmp_path / "regions.yaml", {"eu-west-1": "http://127.0.0.1:1"})
    with pytest.raises(ValidationError) as caught:
        Settings(PROBE_MODEL="scale", REGIONS_FILE=path, REGION="us-east-1")  # type: ignore[call-arg]
    assert "REGION is us-east-1, which" in describe_error(caught.value)
    assert "it names eu-west-1" in describe_error(caught.value)

"""The replication service (`modelserve regions serve`) as deployed: it finds what its source region
publishes, replicates it through faults, and a real Prometheus scraping it runs every replication
panel of the dashboard and every replication alert rule, each with data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy import promql
from tests.deploy.test_prometheus_live import GRAFANA, _prometheus
from tests.e2e.server import free_port, stop
from tests.regions.conftest import PART_MIN, Endpoint, publish, write_regions_file

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REPLICATION_ROW = {
    "Replication lag",
    "Replication queue and jobs",
    "Replication throughput",
    "Replication retries and failures",
    "Checksum mismatches",
}


@dataclass
class Scraped:
    """What Prometheus is told to scrape."""

    address: str


def wait_for(condition: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.1)


def test_the_service_replicates_what_its_source_publishes_and_prometheus_sees_it(
    regions: dict[str, Endpoint], tmp_path: Path
) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    for name in ("resnet", "bert", "mlp"):
        publish(source, name, {"1": {"model.onnx": os.urandom(3 * PART_MIN)}, "2": {"model.onnx": b"small"}})
    path = write_regions_file(tmp_path / "regions.yaml", regions, request_attempts=2)

    # One attempt fails for sure (both tries of one write refused), so the failure counter has a series.
    def first_part(method: str, path: str) -> bool:
        key, _, query = path.partition("?")
        return method == "PUT" and key.endswith("/resnet/1/model.onnx") and "partNumber=1" in query.split("&")

    for _ in range(2):
        target.proxy.fail_next("503", first_part)
    source.proxy.rate = target.proxy.rate = 0.05
    port = free_port()
    log = tmp_path / "service.log"
    env = {
        **os.environ,
        "REGIONS_FILE": str(path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        "DB_POOL_SIZE": "3",
    }
    command = [sys.executable, "-m", "modelserve", "regions", "serve", "--interval", "1", "--host", "127.0.0.1"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--metrics-port", str(port)], cwd=ROOT, env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def jobs() -> list[dict[str, Any]]:
            assert process.poll() is None, log.read_text()
            try:
                answer: list[dict[str, Any]] = httpx.get(f"{url}/jobs", timeout=5).json()
            except httpx.TransportError:
                return []
            return answer

        # 3 models x 2 versions x 2 target regions.
        wait_for(lambda: [j["state"] for j in jobs()] == ["replicated"] * 12, "replicated jobs", 60)
        source.proxy.rate = target.proxy.rate = 0.0
        assert {j["lag_seconds"] for j in jobs()} == {0.0}
        lines = log.read_text()
        assert "replicated resnet:1 from us-east-1 to eu-west-1" in lines
        assert "replication of resnet:1 to eu-west-1, attempt 1 (throttled) failed, next try in" in lines

        with _prometheus(Scraped(f"127.0.0.1:{port}"), tmp_path) as (prometheus, _):  # type: ignore[arg-type]

            def query(expr: str) -> list[dict[str, Any]]:
                answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
                assert answer["status"] == "success", (expr, answer)
                result: list[dict[str, Any]] = answer["data"]["result"]
                return result

            queries = [q for q in promql.dashboard_queries() if q.where.split("'")[1] in REPLICATION_ROW]
            queries += [q for q in promql.rule_queries() if "replication" in q.expr]
            assert len(queries) >= 10
            for item in queries:
                expr = promql.concrete(item.expr, GRAFANA)
                wait_for(lambda expr=expr: bool(query(expr)) or "> " in expr, f"data for {item.where}", 20)
            failures = query("sum by (reason) (model_serving_replication_failures_total)")
            assert {f["metric"]["reason"] for f in failures} >= {"throttled"}
            lags = query("max(model_serving_replication_lag_seconds)")
            assert float(lags[0]["value"][1]) == 0.0
            pool = query('model_serving_db_pool_size{pool="replication"}')
            assert float(pool[0]["value"][1]) == 3.0, "the jobs' engine honours DB_POOL_SIZE"
    finally:
        stop(process, 10)

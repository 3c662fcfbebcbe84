"""A real Prometheus scraping a real `modelserve serve` under a little load runs every expression of the
alert rules and of the Grafana dashboard: each parses, and the figures an operator looks at first
(traffic, latency, batching, queues, models, memory) have data.

promtool's unit tests feed the rules series written by hand; this checks them, and the dashboard,
against the series the server really exports, with the labels it really sets. So too the queries that
prometheus-adapter sends for the autoscaler and Flagger for the rollout gate, which select a pod by the
labels a ServiceMonitor's scrape gives it.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy import adapter, flagger, promql
from tests.deploy.tools import tool
from tests.e2e.server import RunningServer, free_port, serve, stop

MODELS = ("mlp", "simple")
# The labels the ServiceMonitor's scrape gives a pod of the Deployment model-serving.
POD_LABELS = {"namespace": "model-serving", "pod": "model-serving-7d9f8b6c5d-x2x7q"}
ROUNDS = 40  # per phase; each round sends one request of each kind below
LOAD_TIMEOUT_S = 15.0
SCRAPE_TIMEOUT_S = 15.0
# Grafana's variables as Grafana fills them for "All models" over a window that spans both phases.
GRAFANA = {"model": ".*", "__rate_interval": "1m", "__range": "1m"}
REPLICATION_SERVICE = "the replication service exports it (tests/regions/test_service.py scrapes one)"
PROBES = "no PROBE_MODEL here (tests/regions/test_probes.py scrapes a probing server)"
CACHE = "no model here enables the response cache (tests/e2e/test_response_cache.py)"
ROLLOUT = "no rollout runs here (tests/e2e/test_rollout.py)"
GENERATIVE = "no generative model here (tests/e2e/test_openai.py)"
# Queries that may rightly return nothing here, and why. Every other dashboard query must return data.
MAY_BE_EMPTY = {
    "panel 'Server error rate' A": "the example models never fail on the server; its denominator is checked",
    "panel 'Inference compute' B": "the server is seconds old, not a week",
    "panel 'Model load failures' A": "every model loads",
    "panel 'GPU utilisation' A": "GPU series exist on NVIDIA hosts only",
    "panel 'GPU memory used' A": "GPU series exist on NVIDIA hosts only",
    "panel 'GPU temperature' A": "GPU series exist on NVIDIA hosts only",
    "panel 'GPU power' A": "GPU series exist on NVIDIA hosts only",
    "annotation 'Alerts firing'": "nothing fires under this load",
    "panel 'Memory per model' B": "GPU footprints are measured on NVIDIA hosts with GPU_MEMORY_FRACTION only",
    "panel 'Evictions, cold starts and pre-loads' A": "explicit mode evicts nothing (test_on_demand.py: on-demand)",
    "panel 'Evictions, cold starts and pre-loads' B": "explicit mode loads nothing on demand (test_on_demand.py)",
    "panel 'Evictions, cold starts and pre-loads' C": "no pre-warming policy (tests/e2e/test_prewarm_live.py)",
    "panel 'Pre-warming against lru' A": "no pre-warming policy (tests/e2e/test_prewarm_plan.py reads these)",
    "panel 'Pre-warming against lru' B": "no pre-warming policy (tests/e2e/test_prewarm_plan.py reads these)",
    "panel 'Pre-warming against lru' C": "no pre-warming policy (tests/e2e/test_prewarm_live.py)",
    "panel 'Traffic history dropped' A": "the history's database is up (tests/history/test_outage.py drops)",
    "panel 'Database pool waits' A": "one writer never waits for its pool (tests/observability/test_pools.py waits)",
    "panel 'Database pool waits' B": "one writer never waits for its pool (tests/observability/test_pools.py waits)",
    "panel 'Replication lag' A": REPLICATION_SERVICE,
    "panel 'Replication queue and jobs' A": REPLICATION_SERVICE,
    "panel 'Replication queue and jobs' B": REPLICATION_SERVICE,
    "panel 'Replication throughput' A": REPLICATION_SERVICE,
    "panel 'Replication retries and failures' A": REPLICATION_SERVICE,
    "panel 'Replication retries and failures' B": REPLICATION_SERVICE,
    "panel 'Checksum mismatches' A": REPLICATION_SERVICE,
    "panel 'Checksum mismatches' B": REPLICATION_SERVICE,
    "panel 'Cost per model, last 24 hours' A": "no PRICES_FILE here (tests/regions/test_cost_metrics.py sets one)",
    "panel 'Cost anomaly (robust z-score)' A": "no PRICES_FILE here (tests/regions/test_cost_metrics.py sets one)",
    "panel 'Budgets spent' A": "no PRICES_FILE here (tests/regions/test_cost_metrics.py sets one)",
    "panel 'Region availability (probes)' A": PROBES,
    "panel 'Cross-region latency p99' A": PROBES,
    "panel 'Probe failures' A": PROBES,
    "panel 'Response cache hit ratio' A": CACHE,
    "panel 'Response cache memory and evictions' A": CACHE,
    "panel 'Response cache memory and evictions' B": CACHE,
    "panel 'Requests abandoned before running' A": "no caller leaves early here (tests/e2e/test_grpc.py)",
    "panel 'Rollout share' A": ROLLOUT,
    "panel 'Rollout checks and rollbacks' A": ROLLOUT,
    "panel 'Rollout checks and rollbacks' B": ROLLOUT,
    "panel 'Time to first token' A": GENERATIVE,
    "panel 'Time to first token' B": GENERATIVE,
    "panel 'Inter-token latency' A": GENERATIVE,
    "panel 'Inter-token latency' B": GENERATIVE,
    "panel 'Generation queue time' A": GENERATIVE,
    "panel 'Tokens per second' A": GENERATIVE,
    "panel 'Tokens per second' B": GENERATIVE,
    "panel 'Generations running and waiting, KV cache' A": GENERATIVE,
    "panel 'Generations running and waiting, KV cache' B": GENERATIVE,
    "panel 'Generations running and waiting, KV cache' C": GENERATIVE,
    "panel 'Generations finished, by reason' A": GENERATIVE,
}
# Queries with a model label that rightly leave some models out. Every other one shows every model.
SOME_MODELS_ONLY = {
    "panel 'Server error rate' B": "only mlp receives bad requests",
    "panel 'Rejected requests by reason' A": "only mlp receives bad requests",
}

MLP_GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
MLP_BAD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": [0.5] * 15}]}
SIMPLE_GOOD = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]
}
# (model, body, expected status): successes for both models, a client error, and an unknown model.
KINDS = (("mlp", MLP_GOOD, 200), ("simple", SIMPLE_GOOD, 200), ("mlp", MLP_BAD, 400), ("nonexistent", MLP_GOOD, 404))


@dataclass
class Stack:
    """The server under load and the Prometheus that scraped it."""

    server: RunningServer
    prometheus: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now; fails, with Prometheus' reason, if it does not parse."""
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}\n→ {body.get('errorType')}: {body.get('error')}"
        assert body["data"]["resultType"] == "vector", expr
        return list(body["data"]["result"])


def _wait(condition: Callable[[], bool], what: str, timeout_s: float, log: Path) -> None:
    """Poll ``condition``; when it never holds, fail with Prometheus' log, which usually says why."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gave up after {timeout_s:g} s waiting for {what}; Prometheus said:\n{log.read_text()}"
            )
        time.sleep(0.1)


def _send(server: RunningServer, client: httpx.Client, rounds: int, deadline: float) -> int:
    """Send ``rounds`` rounds of requests, each answered as expected; the number sent."""
    sent = 0
    for _ in range(rounds):
        for model, body, status in KINDS:
            assert time.monotonic() < deadline, f"the load took longer than {LOAD_TIMEOUT_S:g} s"
            response = client.post(f"{server.url}/v2/models/{model}/infer", json=body)
            assert response.status_code == status, response.text
            sent += 1
    return sent


@contextmanager
def _prometheus(server: RunningServer, root: Path) -> Iterator[tuple[str, Path]]:
    """Prometheus scraping ``server`` every second and evaluating the alert rules, until the block ends."""
    binary = tool("prometheus")
    config = root / "prometheus.yml"
    every_second = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config.write_text(
        yaml.safe_dump(
            {
                "global": every_second,
                "rule_files": [str(promql.RULES)],
                "scrape_configs": [
                    {"job_name": "modelserve", "static_configs": [{"targets": [server.address], "labels": POD_LABELS}]}
                ],
            }
        )
    )
    port = free_port()
    log = root / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: process.poll() is not None or _ready(url), "Prometheus to get ready", SCRAPE_TIMEOUT_S, log)
        assert process.poll() is None, f"Prometheus exited with {process.returncode}:\n{log.read_text()}"
        yield url, log
    finally:
        stop(process, 10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _scraped(stack: Stack, requests: int) -> bool:
    """Whether Prometheus has scraped a count of at least ``requests`` answered requests."""
    result = stack.query('sum(model_serving_requests_total{job="modelserve"})')
    return bool(result) and float(result[0]["value"][1]) >= requests


@pytest.fixture(scope="module")
def stack(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """modelserve with two models, loaded in two phases, each scraped before the next, so that every
    counter and histogram has risen within the last minute of samples."""
    root = tmp_path_factory.mktemp("prometheus-live")
    loads = [argument for model in MODELS for argument in ("--load-model", model)]
    # The history's engine, whose pool the dashboard charts, opens at its first write: one second in.
    writes = ("--history-flush-interval-sec", "1")
    with (
        serve(built_repository, root / "server.log", "--model-control-mode", "explicit", *loads, *writes) as server,
        _prometheus(server, root) as (url, log),
        httpx.Client(timeout=10) as client,
    ):
        running = Stack(server, url)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        sent = 0
        for phase in (1, 2):
            sent += _send(server, client, ROUNDS, deadline)
            _wait(
                partial(_scraped, running, sent),
                f"Prometheus to scrape the {sent} requests of phase {phase}",
                SCRAPE_TIMEOUT_S,
                log,
            )
        _wait(lambda: bool(running.query("model_serving_db_pool_size")), "a scrape of the pools", SCRAPE_TIMEOUT_S, log)
        yield running


def _models(result: list[dict[str, Any]]) -> set[str]:
    return {sample["metric"]["model"] for sample in result if "model" in sample["metric"]}


def test_prometheus_loads_every_rule_group_and_evaluates_every_rule(stack: Stack) -> None:
    expected = {
        group["name"]: [rule["alert"] for rule in group["rules"]]
        for group in yaml.safe_load(promql.RULES.read_text())["groups"]
    }

    def groups() -> list[dict[str, Any]]:
        return list(httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"])

    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while any(rule["health"] == "unknown" for group in groups() for rule in group["rules"]):
        assert time.monotonic() < deadline, "some rules were never evaluated"
        time.sleep(0.1)
    loaded = groups()

    assert {group["name"]: [rule["name"] for rule in group["rules"]] for group in loaded} == expected
    for group in loaded:
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"


@pytest.mark.parametrize("query", promql.rule_queries(), ids=lambda query: query.where)
def test_every_alert_expression_runs(stack: Stack, query: promql.Query) -> None:
    stack.query(query.expr)


def test_the_paging_alerts_see_every_model(stack: Stack) -> None:
    """Their thresholds hold nothing back here, so the quantity each compares must cover every model."""
    rules = {rule["alert"]: rule["expr"] for rule in promql.alert_rules()}
    p99, _ = promql.top_level_operands(rules["InferenceLatencyHigh"], ">")
    ratio, _ = promql.top_level_operands(rules["InferenceErrorRateHigh"], ">")
    _, all_requests = promql.top_level_operands(ratio, "/")

    assert set(MODELS) <= _models(stack.query(p99))
    assert set(MODELS) <= _models(stack.query(all_requests))


@pytest.mark.parametrize("query", promql.dashboard_queries(), ids=lambda query: query.where)
def test_every_dashboard_query_runs_and_shows_every_model(stack: Stack, query: promql.Query) -> None:
    result = stack.query(promql.concrete(query.expr, GRAFANA))

    if query.where not in MAY_BE_EMPTY:
        assert result, f"{query.where} shows nothing:\n{query.expr}"
    values = [float(sample["value"][1]) for sample in result]
    assert all(math.isfinite(value) for value in values), f"{query.where}: {result}"
    if _models(result) and query.where not in SOME_MODELS_ONLY:
        assert set(MODELS) <= _models(result), f"{query.where}: {result}"
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", query.legend):
        assert all(label in sample["metric"] for sample in result), f"{query.where}: no {label} to show"


def test_the_server_error_rate_panel_has_a_denominator_for_every_model(stack: Stack) -> None:
    (panel,) = [panel for panel in promql.panels() if panel["title"] == "Server error rate"]
    _, all_requests = promql.top_level_operands(panel["targets"][0]["expr"], "/")

    assert set(MODELS) <= _models(stack.query(promql.concrete(all_requests, GRAFANA)))


def test_the_model_variable_lists_every_model_called(stack: Stack) -> None:
    matched = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", promql.model_variable_query())
    assert matched is not None, promql.model_variable_query()
    metric, label = matched.groups()
    response = httpx.get(f"{stack.prometheus}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10)

    assert set(MODELS) | {"unknown"} <= set(response.json()["data"])


def test_the_autoscaler_metrics_answer_one_value_for_the_pod(stack: Stack) -> None:
    """What prometheus-adapter asks when the autoscaler reads a metric of the pod."""
    pod = POD_LABELS["pod"]
    fields = {"LabelMatchers": f'namespace="{POD_LABELS["namespace"]}",pod=~"{pod}"', "GroupBy": "pod"}
    for rule in adapter.rules():
        result = stack.query(adapter.fill(rule["metricsQuery"], {**fields, "Series": adapter.series_name(rule)}))
        assert [sample["metric"] for sample in result] == [{"pod": pod}], f"{rule['name']['as']}: {result}"
        assert math.isfinite(float(result[0]["value"][1])), f"{rule['name']['as']}: {result}"


def test_the_rollout_gate_passes_the_pod_under_this_load(stack: Stack) -> None:
    """The pod, named as the canary's pods are, failed no request on the server, and answered quickly."""
    checks = {check.name: check.query for check in flagger.checks(flagger.rendered())}
    [success] = stack.query(checks["success-rate"])
    assert float(success["value"][1]) == 100
    [latency] = stack.query(checks["latency-p99"])
    assert 0 < float(latency["value"][1]) < 10


def test_the_queries_excused_from_data_exist() -> None:
    where = {query.where for query in promql.dashboard_queries()}

    assert set(MAY_BE_EMPTY) | set(SOME_MODELS_ONLY) <= where

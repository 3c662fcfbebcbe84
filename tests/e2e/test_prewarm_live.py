"""The pre-warming policies on a real server: a short trace replayed in on-demand mode with a budget
too small for every model, cold starts read from the server's own metrics.

Four models of 16 MiB each are asked for in turn, one a second, so each every 4 s, and the budget holds
two: a cycle longer than the cache, the case where evicting the least recently used model evicts
exactly the one needed next. ``predictive`` learns each model's fixed rate from its first inter-arrival
times and from then on loads it before its request. Both policies replay the same trace at once, each
on its own server.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserve.models.memory import MIB
from tests.builders import matmul_onnx
from tests.e2e.server import RunningServer, serve

MODELS = ("m0", "m1", "m2", "m3")
FEATURES = 2048
GAP_S = 1.0  # between two requests of the trace: each model comes back every 4 x GAP_S
ROUNDS = 12


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prewarm") / "repository"
    for name in MODELS:
        matmul_onnx(root / name / "1" / "model.onnx", features=FEATURES)
    return root


@pytest.fixture(scope="module")
def cold_starts(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """Each policy's cold starts over the same replayed trace, on a fresh server each."""
    size_mb = (repository / "m0" / "1" / "model.onnx").stat().st_size / MIB
    options = ["--model-control-mode", "on-demand", "--model-memory-budget-mb", f"{2.6 * size_mb:.1f}"]
    logs = {policy: tmp_path_factory.mktemp(policy) / "server.log" for policy in ("lru", "predictive")}
    with (
        serve(repository, logs["lru"], *options, "--prewarm-policy", "lru") as lru,
        serve(repository, logs["predictive"], *options, "--prewarm-policy", "predictive") as predictive,
        ThreadPoolExecutor(2) as pool,
    ):
        servers = {"lru": lru, "predictive": predictive}
        list(pool.map(replay, servers.values()))
        return {policy: metric(server, "model_serving_cold_starts_total") for policy, server in servers.items()}


def replay(server: RunningServer) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, FEATURES], "datatype": "FP32", "data": [1.0] * FEATURES}]}
    start = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for step in range(ROUNDS * len(MODELS)):
            time.sleep(max(0.0, start + step * GAP_S - time.monotonic()))
            model = MODELS[step % len(MODELS)]
            answer = client.post(f"/v2/models/{model}/infer", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["shape"] == [1, FEATURES]


def metric(server: RunningServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_lru_is_cold_on_every_request_of_a_cycle_longer_than_its_cache(cold_starts: dict[str, float]) -> None:
    assert cold_starts["lru"] >= 0.9 * ROUNDS * len(MODELS)


def test_predictive_has_fewer_cold_starts_than_lru(cold_starts: dict[str, float]) -> None:
    assert cold_starts["predictive"] < 0.5 * cold_starts["lru"], cold_starts

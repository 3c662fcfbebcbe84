"""On-demand loading and the memory budget, over HTTP: statuses, bodies, statistics and metrics.

Models ``a`` and ``b`` hold 16 MiB of weights (S) each and have never been loaded, so each reserves
2 S: a budget of 2.5 S holds one at a time, and one of 1.5 S none.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelserve.config import Settings
from modelserve.models.memory import MIB, release_freed_memory, rss_bytes
from modelserve.observability.gpu import device_memory
from modelserve.server.app import memory_budgets
from tests.builders import matmul_onnx
from tests.protocol.serving import metric_value, metrics_of, serving

FEATURES = 2048
SIMPLE = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
    ]
}


@pytest.fixture
def repository(tmp_path: Path, built_repository: Path) -> Path:
    root = tmp_path / "repository"
    shutil.copytree(built_repository, root)
    for name in ("a", "b"):
        matmul_onnx(root / name / "1" / "model.onnx", features=FEATURES)
    return root


def size_mb(repository: Path) -> float:
    return (repository / "a" / "1" / "model.onnx").stat().st_size / MIB


def body(model: str) -> dict[str, object]:
    data = np.ones(FEATURES, np.float32).tolist()
    return {"inputs": [{"name": "x", "shape": [1, FEATURES], "datatype": "FP32", "data": data}]}


def test_requests_load_models_on_demand_evicting_the_idle_one_and_say_so(repository: Path) -> None:
    budget = 2.5 * size_mb(repository)
    with serving(repository, model_control_mode="on-demand", load_models=[], model_memory_budget_mb=budget) as client:
        assert client.get("/v2/models/a/ready").status_code == 503  # a probe never loads
        assert client.post("/v2/models/a/infer", json=body("a")).status_code == 200
        stats = client.get("/v2/models/a/stats").json()["model_stats"][0]
        assert stats["memory_usage"][0]["type"] == "CPU"
        assert stats["memory_usage"][0]["byte_size"] >= size_mb(repository) * MIB

        metadata = client.get("/v2/models/b")  # metadata loads too: clients ask it before inferring
        assert metadata.status_code == 200, metadata.text
        assert client.get("/v2/models/b/ready").status_code == 200
        evicted = client.get("/v2/models/a/ready")
        assert evicted.status_code == 503
        assert "evicted to make room for model 'b'" in evicted.json()["error"]

        samples = metrics_of(client)
        assert metric_value(samples, "model_serving_model_evictions_total", model="a", reason="budget") == 1
        assert metric_value(samples, "model_serving_cold_starts_total", model="a") == 1
        assert metric_value(samples, "model_serving_cold_starts_total", model="b") == 1
        assert (
            metric_value(samples, "model_serving_model_memory_bytes", model="b", version="1")
            >= size_mb(repository) * MIB
        )


def test_a_model_beyond_the_budget_is_507_with_what_to_do_and_others_still_serve(repository: Path) -> None:
    budget = 1.5 * size_mb(repository)
    with serving(
        repository, model_control_mode="on-demand", load_models=["simple"], model_memory_budget_mb=budget
    ) as client:
        refused = client.post("/v2/models/a/infer", json=body("a"))
        assert refused.status_code == 507
        assert "more than MODEL_MEMORY_BUDGET_MB allows" in refused.json()["error"]
        assert "raise the budget" in refused.json()["error"]
        loaded = client.post("/v2/repository/models/b/load")
        assert loaded.status_code == 507
        assert client.get("/v2/health/live").status_code == 200
        assert client.post("/v2/models/simple/infer", json=SIMPLE).status_code == 200


def test_under_memory_pressure_idle_models_are_evicted_so_that_a_load_goes_through(
    example_repository: Path,
) -> None:
    # The server runs in this process: with a and b loaded (2 S more, S = 144 MiB here, so that margins
    # of S / 2 dwarf what else the process allocates, also late in a long test session whose heap has
    # grown in pieces) it is above the limit, and under it once one goes.
    for name in ("a", "b"):
        matmul_onnx(example_repository / name / "1" / "model.onnx", features=3 * FEATURES)
    size = (example_repository / "a" / "1" / "model.onnx").stat().st_size / MIB
    release_freed_memory()  # as the server's loads will: RSS without this process's garbage
    soft = rss_bytes() / MIB + 1.5 * size
    with serving(
        example_repository, model_control_mode="on-demand", load_models=["a", "b"], memory_soft_limit_mb=soft
    ) as client:
        assert metric_value(metrics_of(client), "model_serving_memory_pressure") == 1
        answered = client.post("/v2/models/simple/infer", json=SIMPLE)
        assert answered.status_code == 200, answered.text
        samples = metrics_of(client)
        evicted = [
            m
            for m in ("a", "b")
            if metric_value(samples, "model_serving_model_evictions_total", model=m, reason="memory_pressure")
        ]
        assert evicted == ["a"]  # loaded first, never used since: the least recently used
        assert client.get("/v2/models/b/ready").status_code == 200


def test_gpu_memory_fraction_budgets_gpu_0_or_warns_on_a_host_without_one(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(gpu_memory_fraction=0.5, model_memory_budget_mb=100)
    with caplog.at_level(logging.WARNING, "modelserve.server"):
        budgets = {budget.kind: budget for budget in memory_budgets(settings)}
    assert budgets["CPU"].limit_bytes == 100 * MIB
    reading = device_memory()
    if reading is None:  # a CPU host: the same manifest must still start, and say what it ignored
        assert "GPU" not in budgets
        assert "GPU_MEMORY_FRACTION is set but this host has no GPU" in caplog.text
    else:
        assert budgets["GPU"].limit_bytes == reading[1] // 2
        assert budgets["GPU"].meter() > 0

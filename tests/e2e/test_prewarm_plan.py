"""``GET /v2/prewarm`` and ``modelserve prewarm plan`` on a real server: what the policy plans and did, each
model's pattern and counts, agreeing with /metrics; admin scope; a server without a policy says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from modelserve.cli import app
from tests.builders import matmul_onnx
from tests.e2e.server import RunningServer, serve

MODELS = ("m0", "m1", "m2")
FEATURES = 1024  # 4 MiB of weights each: footprints well above the noise of RSS readings
ADMIN_KEY = "plan-admin-key-0123456789"
INFER_KEY = "plan-infer-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """predictive, with a budget smaller than the three models together, and API keys on."""
    root = tmp_path_factory.mktemp("plan")
    for name in MODELS:
        matmul_onnx(root / "repository" / name / "1" / "model.onnx", features=FEATURES)
    options = (
        "--model-control-mode",
        "on-demand",
        "--model-memory-budget-mb",
        "10.4",
        "--prewarm-policy",
        "predictive",
    )
    environment = {"API_KEYS": f"{ADMIN_KEY}:admin,{INFER_KEY}:infer"}
    with serve(root / "repository", root / "server.log", *options, env=environment) as running:
        body = {"inputs": [{"name": "x", "shape": [1, FEATURES], "datatype": "FP32", "data": [1.0] * FEATURES}]}
        with httpx.Client(base_url=running.url, headers=ADMIN, timeout=30) as client:
            for name in ("m0", "m1", "m0", "m2", "m1", "m0"):
                client.post(f"/v2/models/{name}/infer", json=body).raise_for_status()
        yield running


def samples(server: RunningServer, name: str) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        s.labels["model"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_the_report_shows_the_plan_and_agrees_with_the_metrics(server: RunningServer) -> None:
    report = httpx.get(f"{server.url}/v2/prewarm", headers=ADMIN, timeout=10).json()
    assert report["policy"] == "predictive"
    assert 0 < report["used_mb"] <= report["budget_mb"] == pytest.approx(10.4)
    rows = {row["model"]: row for row in report["models"]}
    assert set(rows) == set(MODELS)
    cold = samples(server, "model_serving_cold_starts_total")
    lru_cold = samples(server, "model_serving_prewarm_lru_cold_starts_total")
    for name in MODELS:
        assert rows[name]["cold_starts"] == cold.get(name, 0)
        assert rows[name]["lru_cold_starts"] == lru_cold.get(name, 0)
        assert rows[name]["cold_starts_avoided"] == rows[name]["lru_cold_starts"] - rows[name]["cold_starts"]
        assert rows[name]["pattern"] in {"schedule", "burst", "daily window", "follower", "none"}
    # lru is cold on each model's first request at least, and on no more than all six
    assert 3 <= report["lru_cold_starts"] == sum(lru_cold.values()) <= 6
    assert all(rows[name]["size_mb"] > 4 and rows[name]["load_seconds"] > 0 for name in MODELS)  # as measured
    assert report["cold_starts"] == sum(cold.values())
    # Every requested model has a keep-alive running out later: an eviction planned with its reason.
    planned = [step for step in report["planned"] if step["action"] == "evict"]
    assert planned
    assert all(step["in_seconds"] > 0 and step["reason"] for step in planned)
    assert [step["at"] for step in report["planned"]] == sorted(step["at"] for step in report["planned"])


def test_the_command_prints_it_as_tables(server: RunningServer) -> None:
    result = CliRunner().invoke(
        app, ["prewarm", "plan", "--url", server.url, "--token", ADMIN_KEY], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "policy predictive" in result.output
    assert "planned, soonest first" in result.output
    assert all(name in result.output for name in MODELS)


def test_it_needs_the_admin_scope(server: RunningServer) -> None:
    refused = httpx.get(f"{server.url}/v2/prewarm", headers={"Authorization": f"Bearer {INFER_KEY}"}, timeout=10)
    assert refused.status_code == 403
    assert "admin" in refused.json()["error"]
    result = CliRunner().invoke(app, ["prewarm", "plan", "--url", server.url, "--token", INFER_KEY])
    assert result.exit_code == 1
    assert "403" in result.output


def test_a_server_without_a_policy_says_pre_warming_is_off(tmp_path: Path) -> None:
    matmul_onnx(tmp_path / "repository" / "m0" / "1" / "model.onnx", features=FEATURES)
    with serve(tmp_path / "repository", tmp_path / "server.log") as running:
        assert httpx.get(f"{running.url}/v2/prewarm", timeout=10).json()["policy"] == "none"
        result = CliRunner().invoke(app, ["prewarm", "plan", "--url", running.url])
    assert result.exit_code == 0, result.output
    assert "pre-warming is off" in result.output


def _cuda() -> str:
    """What this host lacks to hold a model in GPU memory, or "" when it has it all."""
    import onnxruntime

    from modelserve.observability.gpu import device_memory

    missing = (
        [] if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else ["onnxruntime's CUDA provider"]
    )
    return ", ".join(missing + ([] if device_memory() is not None else ["a GPU NVML can read"]))


@pytest.mark.skipif(bool(_cuda()), reason=f"needs a GPU host: this one lacks {_cuda() or 'nothing'}")
def test_on_a_gpu_host_a_model_on_the_gpu_is_planned_within_gpu_memory_fraction(tmp_path: Path) -> None:
    matmul_onnx(tmp_path / "repository" / "g" / "1" / "model.onnx", features=4096)  # 64 MiB of weights
    options = (
        *("--model-control-mode", "on-demand", "--model-memory-budget-mb", "4096"),
        *("--gpu-memory-fraction", "0.5", "--prewarm-policy", "predictive"),
    )
    with serve(tmp_path / "repository", tmp_path / "server.log", *options) as running:
        body = {"inputs": [{"name": "x", "shape": [1, 4096], "datatype": "FP32", "data": [1.0] * 4096}]}
        httpx.post(f"{running.url}/v2/models/g/infer", json=body, timeout=120).raise_for_status()
        report = httpx.get(f"{running.url}/v2/prewarm", timeout=10).json()
    [row] = report["models"]
    assert row["device"] == "gpu"
    assert row["size_mb"] >= 64
    assert 0 < report["gpu_used_mb"] <= report["gpu_budget_mb"]

"""The runbooks' scripts, run as the runbooks run them, against a real server:
`scripts/convert_model.py --model NAME --precision int8`, `scripts/warmup-models.py` (a postStart hook,
no arguments) and `benchmarks/load_test.py --url --concurrent --duration`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.server import RunningServer

ROOT = Path(__file__).resolve().parents[2]


def script(path: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python <path> args`` from the repository root, as an operator types it."""
    environment = {**os.environ, "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, path, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def repository_of(server: RunningServer) -> Path:
    """The model repository the server serves."""
    return server.log.parent / "models"


def test_warmup_models_runs_as_a_post_start_hook(running: RunningServer) -> None:
    result = script("scripts/warmup-models.py", "--json", HTTP_PORT=str(running.port))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["model"] for row in rows] == ["mlp", "simple"]  # every READY model, none of the others
    assert all(row["requests"] == 5 and row["median_ms"] > 0 and not row["error"] for row in rows), rows


def test_warmup_reports_a_model_it_cannot_warm(running: RunningServer) -> None:
    result = script("scripts/warmup-models.py", "--models", "mlp,iris", "--count", "2", HTTP_PORT=str(running.port))
    assert result.returncode == 1
    assert "mlp" in result.stdout
    assert "iris" in result.stdout
    assert "503" in result.stdout  # iris is in the repository but not loaded


def test_load_test_benches_every_ready_model(running: RunningServer) -> None:
    result = script(
        "benchmarks/load_test.py", "--url", running.url, "--concurrent", "2", "--duration", "0.3", "--warmup", "0",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    points = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(p["model"], p["clients"]) for p in points] == [("mlp", 2), ("simple", 2)]
    assert all(p["inferences_per_second"] > 0 and p["errors"] == 0 for p in points), points


def test_convert_model_writes_a_version_the_server_loads(running: RunningServer) -> None:
    repository = repository_of(running)
    result = script("scripts/convert_model.py", "--model", "mlp", "--precision", "int8", "--speed-runs", "3",
                    MODEL_REPOSITORY=str(repository))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "speed-up" in result.stdout
    assert (repository / "mlp-int8" / "1" / "model.onnx").is_file()
    assert httpx.post(f"{running.url}/v1/models/mlp-int8/load", timeout=60).status_code == 200
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32).ravel().tolist()
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": x}]}
    converted = httpx.post(f"{running.url}/v2/models/mlp-int8/infer", json=body).json()["outputs"][0]["data"]
    original = httpx.post(f"{running.url}/v2/models/mlp/infer", json=body).json()["outputs"][0]["data"]
    assert np.abs(np.array(converted) - np.array(original)).max() < 0.1


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine may build engines")
def test_convert_model_to_a_tensorrt_engine_says_what_is_missing(running: RunningServer, tmp_path: Path) -> None:
    engine = tmp_path / "mlp-fp16.trt"
    result = script("scripts/convert_model.py", "--model", "mlp", "--precision", "fp16", "--optimization-level", "5",
                    "--output", str(engine), MODEL_REPOSITORY=str(repository_of(running)))  # fmt: skip
    assert result.returncode == 1
    assert "needs the `tensorrt` Python package" in " ".join(result.stderr.split())
    assert not engine.exists()

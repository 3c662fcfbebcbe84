"""The `modelserve` command as an operator types it: serve's options, bad settings, models, profile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import httpx
import psutil
import pytest
import tritonclient.grpc

from tests.builders import broken_repository
from tests.e2e.server import MODELSERVE, RunningServer, serve


def modelserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELSERVE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def test_serve_help_names_every_setting_and_its_environment_variable() -> None:
    result = modelserve("serve", "--help")
    assert result.returncode == 0
    for variable in (
        "MODEL_REPOSITORY",
        "HTTP_PORT",
        "GRPC_PORT",
        "GRPC_KEEPALIVE_TIME_MS",
        "UVICORN_WORKERS",
        "MODEL_CONTROL_MODE",
        "LOAD_MODELS",
        "MODEL_CACHE_DIR",
        "MODEL_LOAD_TIMEOUT",
        "MAX_BATCH_SIZE",
        "BATCH_TIMEOUT_MS",
        "MAX_QUEUE_SIZE",
        "REQUEST_TIMEOUT_SEC",
        "MAX_INPUT_SIZE_MB",
        "INFERENCE_THREADS",
    ):
        assert f"env: {variable}" in result.stdout, f"{variable} missing from serve --help"


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"MAX_BATCH_SIZE": "lots"}, (), "MAX_BATCH_SIZE='lots'"),
        ({"BATCH_TIMEOUT_MS": "-5"}, (), "BATCH_TIMEOUT_MS='-5'"),
        ({"UVICORN_WORKERS": "0"}, (), "UVICORN_WORKERS='0'"),
        ({"MODEL_CONTROL_MODE": "sometimes"}, (), "MODEL_CONTROL_MODE='sometimes'"),
        ({"TRACE_SAMPLE_RATE": "2"}, (), "TRACE_SAMPLE_RATE='2'"),
        ({}, ("--http-port", "70000"), "HTTP_PORT=70000"),
    ],
)
def test_a_bad_setting_stops_startup_naming_it(
    built_repository: Path, env: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    result = modelserve("serve", "--model-repository", str(built_repository), *args, env=env)
    assert result.returncode == 2
    assert f"invalid setting {named}" in result.stderr


def test_a_missing_repository_stops_startup(tmp_path: Path) -> None:
    result = modelserve("serve", "--model-repository", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "nowhere does not exist" in result.stderr
    result = modelserve("serve", env={"MODEL_REPOSITORY": ""})
    assert result.returncode == 2
    assert "--model-repository" in result.stderr


def test_models_list_load_unload(server: RunningServer) -> None:
    listed = modelserve("models", "list", "--url", server.url)
    assert listed.returncode == 0, listed.stderr
    for name in ("iris", "mlp", "simple", "tiny_cnn"):
        assert name in listed.stdout
    assert "READY" in listed.stdout
    unloaded = modelserve("models", "unload", "iris", env={"MODELSERVE_URL": server.url})
    assert unloaded.returncode == 0, unloaded.stderr
    assert httpx.get(f"{server.url}/v2/models/iris/ready").status_code == 503
    loaded = modelserve("models", "load", "iris", "--url", server.url)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded iris (sklearn)" in loaded.stdout
    assert httpx.get(f"{server.url}/v2/models/iris/ready").status_code == 200
    missing = modelserve("models", "load", "resnet50", "--url", server.url)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert "resnet50" in missing.stderr


def test_broken_models_fail_alone(built_repository: Path, tmp_path: Path) -> None:
    repository = broken_repository(tmp_path / "repo", built_repository)
    with serve(repository, tmp_path / "server.log") as running:
        health = httpx.get(f"{running.url}/health").json()
        assert health["status"] == "degraded"
        assert health["models_loaded"] == ["iris", "mlp", "simple", "tiny_cnn"]
        failed = health["models_failed"]
        assert "config.yaml" in failed["bad_yaml"]
        assert "invalid YAML" in failed["bad_yaml"]
        assert "max_batch_sise: unknown field" in failed["unknown_field"]
        assert "corrupt/1/model.onnx" in failed["corrupt"]
        assert "x FP32 [-1, 5] contradicts" in failed["wrong_dims"]
        assert "[-1, 4]" in failed["wrong_dims"]
        ready = httpx.get(f"{running.url}/v2/models/corrupt/ready")
        assert ready.status_code == 503
        assert "failed to load" in ready.json()["error"]
        answer = httpx.post(f"{running.url}/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]})
        assert answer.status_code == 200
        assert "failed to load" in running.output()


def test_workers_share_the_port(built_repository: Path, tmp_path: Path) -> None:
    with serve(built_repository, tmp_path / "server.log", env={"UVICORN_WORKERS": "2"}) as running:
        workers = psutil.Process(running.process.pid).children(recursive=True)
        assert len([w for w in workers if "python" in w.name().lower()]) >= 2
        for _ in range(8):
            answer = httpx.post(f"{running.url}/v1/predict", json={"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]})
            assert answer.json()["outputs"]["predict"] == [0]
        with tritonclient.grpc.InferenceServerClient(running.grpc_address) as client:
            for _ in range(8):  # each worker listens on the shared gRPC port too
                assert client.is_model_ready("iris")


def test_profile_saves_a_flame_graph_of_the_running_server(server: RunningServer, tmp_path: Path) -> None:
    target = tmp_path / "flame.svg"
    result = modelserve("profile", "--url", server.url, "--seconds", "0.5", "--idle", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert f"wrote {target}" in " ".join(result.stdout.split())
    root = ElementTree.fromstring(target.read_text())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "MainThread" in target.read_text()  # --idle keeps the waiting event loop


def test_profile_says_why_it_cannot_record(tmp_path: Path) -> None:
    result = modelserve("profile", "--url", "http://127.0.0.1:9", "--seconds", "0.2", "-o", str(tmp_path / "p.svg"))
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr
    assert not (tmp_path / "p.svg").exists()
    assert modelserve("profile", "--seconds", "100").returncode == 2  # over the 60 s the server allows


def test_a_misspelt_or_unread_variable_is_named_in_a_warning_at_start(built_repository: Path, tmp_path: Path) -> None:
    env = {"MAX_BATCH_SIZES": "8", "ENFORCE_BATCH_SIZE": "true"}
    with serve(built_repository, tmp_path / "server.log", env=env) as running:
        assert httpx.get(f"{running.url}/health/ready", timeout=10).status_code == 200
    log = (tmp_path / "server.log").read_text()
    assert "MAX_BATCH_SIZES is not a setting and is ignored; did you mean MAX_BATCH_SIZE?" in log
    assert "ENFORCE_BATCH_SIZE is set but modelserve does not read it" in log

"""The runbooks' operations scripts, run as pasted from the repository root, against real servers:
`scripts/test-inference.sh MODEL`, `scripts/smoke-test.sh ENV`, `scripts/integration-test.sh` and
`python scripts/preload-models.sh` (an init container's command); the backup and restore scripts are
in test_backup_scripts.py. Every script call is bounded by a timeout, and every wait inside them by
their --wait/--timeout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.scripts_support import ROOT, SCRIPTS, lines, run, script
from tests.e2e.server import RunningServer, free_port, serve
from tests.generative.builders import build_example_llm


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_prints_its_usage(name: str) -> None:
    result = script(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["Usage:", name]
    assert "Exit status: 0" in result.stdout


def test_the_scripts_parse_and_preload_is_python_too() -> None:
    for path in sorted([*(ROOT / "scripts").glob("*.sh"), *(ROOT / "scripts" / "lib").glob("*.sh")]):
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
    # `python scripts/preload-models.sh`, as the runbook's init container runs it: Python, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile((ROOT / "scripts" / "preload-models.sh").read_text(), "preload-models.sh", "exec")


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_wrong_option_is_a_usage_error(name: str) -> None:
    result = script(name, "--no-such-option")
    assert result.returncode == 2
    assert f"{name}: " in result.stderr
    assert f"Run {name} --help for usage." in result.stderr


def test_test_inference_answers_for_a_loaded_model(running: RunningServer) -> None:
    before = running.metric("model_serving_requests_total", model="mlp")
    result = script("test-inference.sh", "mlp", MODELSERVE_URL=running.url)
    assert result.returncode == 0, result.stderr
    assert f"ok: model 'mlp' answered 3 inference request(s) at {running.url}" in result.stdout
    assert running.metric("model_serving_requests_total", model="mlp") == before + 3


def test_test_inference_on_an_unknown_model_names_it(running: RunningServer) -> None:
    result = script("test-inference.sh", "resnet50-fp16-v2", MODELSERVE_URL=running.url)
    assert result.returncode == 1
    assert "test-inference.sh: model 'resnet50-fp16-v2' is not in the repository of" in result.stderr


def test_test_inference_on_a_model_not_loaded_gives_up_in_time(running: RunningServer) -> None:
    started = time.monotonic()
    result = script("test-inference.sh", "--wait", "1", "iris", MODELSERVE_URL=running.url)
    assert result.returncode == 1
    assert "model 'iris' is not ready" in result.stderr
    assert "503: model 'iris'" in result.stderr
    assert "is not loaded; load it with POST /v1/models/iris/load" in result.stderr
    assert time.monotonic() - started < 30


def test_test_inference_on_a_server_that_is_not_there(tmp_path: Path) -> None:
    result = script("test-inference.sh", "--wait", "1", "mlp", MODELSERVE_URL=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no answer (curl: (7)" in result.stderr


def test_smoke_test_checks_health_readiness_inference_and_metrics(running: RunningServer) -> None:
    before = running.metric("model_serving_requests_total", model="simple")
    result = script("smoke-test.sh", "production", MODELSERVE_URL=running.url)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout)[:5] == [
        f"smoke test of production at {running.url}",
        "ok health: mlp, simple",
        "ok readiness",
        "ok inference mlp: answered",
        "ok inference simple: answered",
    ]
    assert lines(result.stdout)[5].startswith("ok metrics: ")
    assert running.metric("model_serving_requests_total", model="simple") == before + 1


def test_smoke_test_fails_on_a_model_that_failed_to_load(built_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(built_repository, repository)
    (repository / "iris" / "1" / "model.joblib").write_bytes(b"not a model")
    with serve(repository, tmp_path / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as server:
        result = script("smoke-test.sh", MODELSERVE_URL=server.url)
    assert result.returncode == 1
    (health,) = [line for line in lines(result.stderr) if "FAIL health" in line]
    assert "status degraded" in health
    assert "iris: " in health, "the model, and the reason the server gives"
    assert "model.joblib" in health
    assert "ok inference mlp: answered" in lines(result.stdout), "the models that loaded are still checked"


def test_smoke_test_takes_each_environment_s_own_address(running: RunningServer) -> None:
    dev = script("smoke-test.sh", "dev", "--model", "mlp", MODELSERVE_URL_DEV=running.url)
    assert dev.returncode == 0, dev.stderr
    assert f"smoke test of dev at {running.url}" in dev.stdout
    staging = script("smoke-test.sh", "staging")
    assert staging.returncode == 2
    assert "set MODELSERVE_URL_STAGING (or MODELSERVE_URL)" in staging.stderr
    unknown = script("smoke-test.sh", "qa")
    assert unknown.returncode == 2
    assert "unknown environment 'qa': dev, staging or production" in unknown.stderr


def test_smoke_test_reports_every_failed_check(running: RunningServer) -> None:
    down = script("smoke-test.sh", "production", MODELSERVE_URL=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    failed = [line.split(":")[1].strip() for line in lines(down.stderr) if "FAIL" in line]
    assert failed == ["FAIL health", "FAIL readiness", "FAIL inference", "FAIL metrics"]
    unknown = script("smoke-test.sh", "--model", "mlp", "--model", "nope", MODELSERVE_URL=running.url)
    assert unknown.returncode == 1
    assert "smoke-test.sh: FAIL inference nope: model 'nope' is not in the repository" in " ".join(
        unknown.stderr.split()
    )
    assert "ok inference mlp: answered" in lines(unknown.stdout)


def test_integration_test_runs_the_broader_checks(running: RunningServer) -> None:
    result = run(
        ["./scripts/integration-test.sh", "--duration", "0.3"],
        timeout=180,
        MODELSERVE_URL=running.url,
        MODELSERVE_GRPC_ADDRESS=running.grpc_address,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    done = {line.split(":")[0] for line in lines(result.stdout) if line.startswith("ok ")}
    for model in ("mlp", "simple"):
        for part in ("ready", "metadata", "config", "http-json, http-binary", "grpc", "bad input", "statistics"):
            assert f"ok {model} {part}" in done
    for probe in ("/health/live", "/health/startup", "/health/ready", "/v2/health/live", "/v2/health/ready"):
        assert f"ok {probe}" in done
    assert {"ok health", "ok server metadata", "ok unknown model", "ok metrics"} <= done
    assert f"every check passed against {running.url}" in result.stdout
    assert not any("iris" in line for line in done), "only the models READY"


def test_integration_test_fails_on_a_model_that_is_not_ready(running: RunningServer) -> None:
    result = script("integration-test.sh", "--model", "iris", "--wait", "1", MODELSERVE_URL=running.url)
    assert result.returncode == 1
    assert "integration-test.sh: FAIL iris ready: model 'iris' is not ready" in " ".join(result.stderr.split())
    assert "ok unknown model: 404" in lines(result.stdout), "the other checks still ran"


def test_a_generative_model_is_tested_by_generating(tmp_path: Path) -> None:
    build_example_llm(tmp_path / "models")  # tiny-llm, as `make run` serves it
    with serve(tmp_path / "models", tmp_path / "server.log") as server:
        inference = script("test-inference.sh", "tiny-llm", MODELSERVE_URL=server.url)
        assert inference.returncode == 0, inference.stderr
        assert "model 'tiny-llm' generated 3 time(s)" in inference.stdout
        integration = script("integration-test.sh", MODELSERVE_URL=server.url)
    assert integration.returncode == 0, integration.stdout + integration.stderr
    assert {"ok tiny-llm generate: finish_reason length", "ok tiny-llm completion: 1 token(s)"} <= set(
        lines(integration.stdout)
    )


def test_scripts_send_the_api_key(built_repository: Path, tmp_path: Path) -> None:
    key = "operations-key-0123456789"
    env = {"API_KEYS": f"{key}:admin"}
    with serve(built_repository, tmp_path / "server.log", env=env) as server:
        refused = script("test-inference.sh", "mlp", MODELSERVE_URL=server.url)
        assert refused.returncode == 1
        assert "refused the credentials for model 'mlp' (401:" in refused.stderr
        assert "set MODELSERVE_TOKEN" in refused.stderr
        smoke = script("smoke-test.sh", "--model", "mlp", MODELSERVE_URL=server.url, MODELSERVE_TOKEN=key)
        assert smoke.returncode == 0, smoke.stderr
    assert key not in server.output()


@pytest.fixture
def nothing_loaded(built_repository: Path, tmp_path: Path) -> Iterator[RunningServer]:
    """A server in explicit mode with no model loaded yet."""
    with serve(built_repository, tmp_path / "server.log", "--model-control-mode", "explicit") as server:
        yield server


def ready(server: RunningServer, model: str) -> bool:
    return httpx.get(f"{server.url}/v2/models/{model}/ready").status_code == 200


def test_preload_loads_the_models_named_into_a_running_server(nothing_loaded: RunningServer) -> None:
    # As the runbook's init container writes it: `python scripts/preload-models.sh`.
    result = run([sys.executable, "scripts/preload-models.sh", "iris", "mlp"], MODELSERVE_URL=nothing_loaded.url)
    assert result.returncode == 0, result.stderr
    assert f"preloading into the server at {nothing_loaded.url}" in result.stdout
    assert f"ready at {nothing_loaded.url}: iris mlp" in result.stdout
    assert ready(nothing_loaded, "iris")
    assert ready(nothing_loaded, "mlp")
    assert not ready(nothing_loaded, "simple")
    again = script("preload-models.sh", "--mode", "server", MODELSERVE_URL=nothing_loaded.url, LOAD_MODELS="mlp,simple")
    assert again.returncode == 0, again.stderr
    assert "model 'mlp' is ready already" in again.stdout
    assert "loaded simple (onnx)" in again.stdout
    assert ready(nothing_loaded, "simple")


def test_preload_fails_naming_a_model_that_cannot_load(nothing_loaded: RunningServer) -> None:
    result = script("preload-models.sh", "mlp", "resnet50-fp16", MODELSERVE_URL=nothing_loaded.url)
    assert result.returncode == 1
    assert "preload-models.sh: model 'resnet50-fp16' could not be loaded: 404:" in result.stderr
    assert "preload-models.sh: not ready: resnet50-fp16" in result.stderr
    assert ready(nothing_loaded, "mlp"), "the others are loaded all the same"


def test_preload_in_server_mode_waits_for_the_server_within_its_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    result = script(
        "preload-models.sh",
        "--mode",
        "server",
        "--timeout",
        "1",
        "mlp",
        MODELSERVE_URL=f"http://127.0.0.1:{free_port()}",
    )
    assert result.returncode == 1
    assert "no server answered at" in result.stderr
    assert time.monotonic() - started < 30

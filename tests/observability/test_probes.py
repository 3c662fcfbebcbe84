"""The Kubernetes probes: /health/live, /health/startup and /health/ready, consistent with /v2/health/*."""

from __future__ import annotations

from pathlib import Path

from tests.protocol.serving import serving


def test_a_started_server_is_live_started_and_ready(built_repository: Path) -> None:
    with serving(built_repository) as client:
        for path, status in (("/health/live", "live"), ("/health/startup", "started"), ("/health/ready", "ready")):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.json() == {"status": status}
        assert client.get("/v2/health/ready").json() == {"ready": True}


def test_a_required_model_that_failed_keeps_the_server_unready_and_says_which(built_repository: Path) -> None:
    with serving(built_repository, load_models=["simple", "no_such_model"], ready_path="/health/startup") as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "reason": "required model(s) not ready: no_such_model (see /health for the reason)",
        }
        assert client.get("/v2/health/ready").status_code == 503
        assert "no_such_model" in client.get("/v2/health/ready").json()["error"]
        # Started and live all the same: restarting the process would not bring the model back.
        assert client.get("/health/startup").status_code == 200
        assert client.get("/health/live").status_code == 200
        assert client.post("/v2/models/simple/infer", json={"inputs": []}).status_code == 400  # still serving

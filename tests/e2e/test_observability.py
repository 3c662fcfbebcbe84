"""What the people on call read from a real `modelserve serve` process: JSON logs, and metrics that
stay right with several worker processes."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server import serve

GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
BAD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": [0.5] * 15}]}


def _lines(log: Path) -> list[dict[str, Any]]:
    """Every line the process wrote, each parsed as one JSON object (fails on any line that is not)."""
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "the server wrote nothing"
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise AssertionError(f"not one JSON object: {line!r}") from None
    return parsed


def test_with_json_logs_every_line_is_json_and_each_request_has_an_access_line(
    built_repository: Path, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with serve(built_repository, log, env={"LOG_FORMAT": "json"}) as server:
        assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD).status_code == 200
        assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=BAD).status_code == 400
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=30)  # shutdown's own lines are in the log too

    lines = _lines(log)
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= line.keys(), line
        stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert stamp.utcoffset() == UTC.utcoffset(None), line["timestamp"]  # UTC, and explicitly so
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # the libraries' lines too
    access = [line for line in lines if line["logger"] == "modelserve.access"]
    assert [(a["model"], a["status"], a["code"]) for a in access] == [("mlp", "success", 200), ("mlp", "error", 400)]
    assert all(a["level"] == "info" and a["latency_ms"] > 0 and a["protocol"] == "http" for a in access)
    assert "shape [1, 15]" in access[1]["error"]


def test_access_log_sample_rate_0_writes_no_access_lines(built_repository: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serve(built_repository, log, env={"LOG_FORMAT": "json", "ACCESS_LOG_SAMPLE_RATE": "0"}) as server:
        for _ in range(5):
            assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD).status_code == 200

    assert not [line for line in _lines(log) if line["logger"] == "modelserve.access"]


def _requests_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "model_serving_requests_total" and sample.labels["model"] == "mlp"
    )


def test_with_two_workers_every_scrape_counts_every_workers_requests(built_repository: Path, tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with serve(built_repository, tmp_path / "server.log", "--workers", "2", env=env) as server:
        # A new connection per request, so the kernel spreads them over both workers.
        for _ in range(40):
            assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD).status_code == 200
        counted_by = {path.name for path in shared.glob("counter_*.db")}
        scrapes = [_requests_total(server.url) for _ in range(8)]

    assert len(counted_by) == 2, f"the requests did not reach both workers: {counted_by}"
    assert scrapes == [40.0] * 8

"""A client that hangs up while its request is queued: the request leaves the queue without running."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import serve

QUEUE_DELAY_MS = 1500  # a lone request waits this long for its batch to fill


def test_a_request_whose_client_hangs_up_while_queued_never_runs(built_repository: Path, tmp_path: Path) -> None:
    options = ["--model-control-mode", "explicit", "--load-model", "simple", "--batch-timeout-ms", str(QUEUE_DELAY_MS)]
    options += ["--log-format", "json"]
    inputs = [{"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))} for n in ("INPUT0", "INPUT1")]
    with serve(built_repository, tmp_path / "server.log", *options) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v2/models/simple/infer", json={"inputs": inputs}, timeout=0.3)
        time.sleep(QUEUE_DELAY_MS / 1000 + 0.5)  # past the moment its batch would have run
        stats = httpx.get(f"{server.url}/v2/models/simple/stats").json()["model_stats"][0]
        answered = httpx.post(f"{server.url}/v2/models/simple/infer", json={"inputs": inputs}, timeout=10)
        log = server.output()

    assert stats["execution_count"] == 0, stats
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert answered.status_code == 200
    assert '"code": 499' in log or '"code":499' in log, log[-2000:]

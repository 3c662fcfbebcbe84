"""Each worker process of `modelserve serve --workers N` writes its own access lines, from a thread it
starts itself: every answered request has its line while the server runs, and none is lost at exit."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from tests.e2e.server import serve

GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
REQUESTS = 40


def test_every_worker_writes_the_lines_of_the_requests_it_answers(built_repository: Path, tmp_path: Path) -> None:
    with serve(built_repository, tmp_path / "server.log", "--workers", "2", env={"LOG_FORMAT": "json"}) as server:
        # A connection per request: the kernel spreads them over the workers (SO_REUSEPORT).
        for _ in range(REQUESTS):
            assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD).status_code == 200
        written = server.access_lines(REQUESTS)
        assert len(written) == REQUESTS
        for _ in range(REQUESTS):  # and these, while the writers may be between two batches, at exit
            assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD).status_code == 200
        os.killpg(server.process.pid, signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0

        assert len(server.access_lines(2 * REQUESTS, timeout_s=0)) == 2 * REQUESTS

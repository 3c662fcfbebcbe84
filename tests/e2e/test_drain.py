"""SIGTERM under load: accepted requests finish with correct answers, new ones get 503, the process exits 0."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from tests.e2e.server import serve

CLIENTS = 8
QUEUE_DELAY_MS = 300  # every request waits this long for a batch: many are in flight when SIGTERM lands


def test_sigterm_under_load_finishes_accepted_requests_refuses_new_ones_and_exits_0(
    built_repository: Path, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    options = ["--model-control-mode", "explicit", "--load-model", "simple"]
    options += ["--batch-timeout-ms", str(QUEUE_DELAY_MS), "--shutdown-grace-sec", "10"]
    outcomes: list[tuple[float, float, str]] = []  # (sent, answered, outcome)
    lock = threading.Lock()
    with serve(built_repository, log, *options) as server:
        url = f"{server.url}/v2/models/simple/infer"
        deadline = time.monotonic() + 30

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with httpx.Client(timeout=20) as http:
                while time.monotonic() < deadline:
                    a, b = rng.integers(-1000, 1000, (2, 16))
                    inputs = [
                        {"name": name, "datatype": "INT32", "shape": [1, 16], "data": data.tolist()}
                        for name, data in (("INPUT0", a), ("INPUT1", b))
                    ]
                    sent = time.monotonic()
                    try:
                        response = http.post(url, json={"inputs": inputs})
                    except httpx.ConnectError:
                        outcome = "not sent"  # the server had stopped listening: nothing was accepted
                    except httpx.TransportError as exc:
                        outcome = f"cut off: {exc!r}"
                    else:
                        outcome = _judge(response, a, b)
                    with lock:
                        outcomes.append((sent, time.monotonic(), outcome))
                    if outcome != "ok":
                        return

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        terminated = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        readiness = _readiness_while_draining(server.url)
        for thread in threads:
            thread.join(30)
        code = server.process.wait(30)

    kinds = Counter(outcome for _, _, outcome in outcomes)
    assert code == 0, server.output()[-3000:]
    assert set(kinds) <= {"ok", "503 shutting down", "not sent"}, kinds
    assert kinds["503 shutting down"] >= 1, kinds
    in_flight_then_answered = [o for sent, done, o in outcomes if sent < terminated < done and o == "ok"]
    assert in_flight_then_answered, f"no request accepted before SIGTERM finished after it: {kinds}"
    assert readiness == 503
    assert "drained in" in log.read_text()


def _judge(response: httpx.Response, a: np.ndarray, b: np.ndarray) -> str:
    if response.status_code == 503:
        body = response.json()
        assert "shutting down" in body["error"], body
        assert response.headers["connection"] == "close"
        return "503 shutting down"
    if response.status_code != 200:
        return f"unexpected {response.status_code}: {response.text}"
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    right = outputs["OUTPUT0"] == (a + b).tolist() and outputs["OUTPUT1"] == (a - b).tolist()
    return "ok" if right else f"wrong answer: {outputs}"


def _readiness_while_draining(url: str) -> int:
    """The readiness probe's status once the signal has been handled (200 only if it never turned)."""
    status = 200
    for _ in range(100):
        try:
            status = httpx.get(f"{url}/health/ready", timeout=1).status_code
        except httpx.TransportError:
            break
        if status == 503:
            break
        time.sleep(0.005)
    return status

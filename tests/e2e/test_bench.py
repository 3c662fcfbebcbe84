"""`modelserve bench` against a real server: every protocol answers, and the figures are consistent."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.server import MODELSERVE, RunningServer


def test_bench_measures_every_protocol(server: RunningServer) -> None:
    command = [
        *MODELSERVE, "bench", "simple", "--url", server.url, "--grpc-address", server.grpc_address,
        "--protocol", "http-json", "--protocol", "http-binary", "--protocol", "grpc",
        "--concurrency", "1", "--concurrency", "4", "--batch", "2", "--duration", "0.5", "--warmup", "0.2", "--json",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    points = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(p["protocol"], p["clients"]) for p in points] == [
        (protocol, clients) for protocol in ("http-json", "http-binary", "grpc") for clients in (1, 4)
    ]
    for point in points:
        assert point["errors"] == 0
        assert point["inferences_per_second"] > 0
        assert point["batch"] == 2
        assert 0 < point["p50_ms"] <= point["p90_ms"] <= point["p99_ms"]


def test_bench_counts_refused_requests_as_errors(server: RunningServer) -> None:
    """Batches of 9 exceed simple's max_batch_size: every request is refused and counted as an error."""
    command = [
        *MODELSERVE, "bench", "simple", "--url", server.url, "--grpc-address", server.grpc_address,
        "--protocol", "http-binary", "--protocol", "grpc", "--concurrency", "2", "--batch", "9",
        "--duration", "0.3", "--warmup", "0", "--json",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    for point in map(json.loads, run.stdout.splitlines()):
        assert point["errors"] > 0
        assert point["inferences_per_second"] == 0

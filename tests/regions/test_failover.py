"""Two regions (a real `modelserve serve` on its own moto store each) behind a real HAProxy configured by
`router-config`: geo-routing, planned moves under load with no failed request, the refusals, and the
router failing over by itself when a region's server is killed or hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from typer.testing import CliRunner

from modelserve.regions.cli import app
from modelserve.regions.router import SERVED_BY_HEADER
from tests.builders import scale_onnx
from tests.e2e.server import RunningServer
from tests.regions.conftest import Endpoint, publish
from tests.regions.routing import (
    ROOT,
    Router,
    Traffic,
    kill,
    regional_servers,
    router_settings,
    running_router,
    write_regions,
)

pytestmark = pytest.mark.e2e
US, EU = "us-east-1", "eu-west-1"


@pytest.fixture
def stores(regions: dict[str, Endpoint], tmp_path: Path) -> dict[str, Endpoint]:
    """us-east-1 and eu-west-1, each publishing the same version 1 of `scale` (a verified replica)."""
    model = scale_onnx(tmp_path / "model.onnx").read_bytes()
    for name in (US, EU):
        publish(regions[name], "scale", {"1": {"model.onnx": model}})
    return {US: regions[US], EU: regions[EU]}


@pytest.fixture
def servers(stores: dict[str, Endpoint], tmp_path: Path) -> Iterator[dict[str, RunningServer]]:
    with regional_servers(stores, tmp_path) as running:
        yield running


@pytest.fixture
def router(
    stores: dict[str, Endpoint], servers: dict[str, RunningServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Router]:
    """HAProxy in front of both; REGIONS_FILE and ROUTER_RUNTIME_API name them, as an operator's would."""
    path = write_regions(tmp_path / "regions.yaml", stores, servers)
    monkeypatch.setenv("REGIONS_FILE", str(path))
    with running_router(path, tmp_path, router_settings()) as running:
        monkeypatch.setenv("ROUTER_RUNTIME_API", str(running.socket))
        yield running


def served_by(router: Router, region: str | None = None) -> str:
    headers = {"X-Client-Region": region} if region else {}
    response = httpx.post(f"{router.url}/v2/models/scale/infer", content=b"", headers=headers, timeout=10)
    return str(response.headers.get(SERVED_BY_HEADER, ""))


def grpc_served_by(router: Router, region: str) -> str:
    """Which server answered a gRPC ModelInfer through the router's h2 frontend (its X-Served-By metadata)."""
    request = service_pb2.ModelInferRequest(model_name="scale")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), dtype=np.float32).tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{router.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer, call = stub.ModelInfer.with_call(request, metadata=[("x-client-region", region)], timeout=10)
    assert np.frombuffer(answer.raw_output_contents[0], dtype=np.float32).tolist() == [2.0] * 4
    return str(dict(call.initial_metadata()).get(SERVED_BY_HEADER.lower(), ""))


def failover(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["failover", *args], env={"COLUMNS": "300"}, catch_exceptions=False)
    return result.exit_code, result.output


def test_a_clients_region_picks_its_region_and_the_next_by_priority_when_it_is_down(router: Router) -> None:
    assert served_by(router, EU) == f"{EU}_0"
    assert served_by(router, US) == f"{US}_0"
    assert served_by(router) == f"{US}_0", "no header: the first region by priority"
    assert served_by(router, "mars-1") == f"{US}_0"
    assert grpc_served_by(router, EU) == f"{EU}_grpc_0"
    assert grpc_served_by(router, US) == f"{US}_grpc_0"

    router.api.set_state(f"http_{EU}", f"{EU}_0", "maint")
    assert served_by(router, EU) == f"{US}_0"
    assert grpc_served_by(router, EU) == f"{US}_grpc_0", "the region's gRPC server follows its HTTP server"


def test_a_client_without_the_header_is_placed_by_its_address(
    stores: dict[str, Endpoint], servers: dict[str, RunningServer], tmp_path: Path
) -> None:
    clients = tmp_path / "clients.map"
    clients.write_text(f"127.0.0.0/8 {EU}\n")
    path = write_regions(tmp_path / "regions.yaml", stores, servers)
    with running_router(path, tmp_path, router_settings(client_map=clients)) as router:
        assert served_by(router) == f"{EU}_0", "127.0.0.1 is in eu-west-1's network"
        assert served_by(router, US) == f"{US}_0", "the header wins"


def test_a_planned_move_and_back_under_load_fails_no_request(router: Router) -> None:
    with Traffic(router.url, clients=4) as traffic:
        traffic.wait_for(200)
        # The runbook's command, as written, from the repository root.
        moved = subprocess.run(
            [sys.executable, "-m", "src.failover.failover_controller", "--from-region", US, "--to-region", EU],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert moved.returncode == 0, moved.stdout + moved.stderr
        moved_at = time.monotonic()
        traffic.wait_for(len(traffic.records) + 300)
        back_at = time.monotonic()
        code, text = failover("--from-region", US, "--to-region", EU, "--back", "--json")
        assert code == 0, text
        traffic.finish_after(200)
    assert traffic.records, "no traffic"
    assert traffic.failed == []
    assert "drain us-east-1" in moved.stdout
    assert "maintenance us-east-1" in moved.stdout
    assert {r.served_by for r in traffic.records if moved_at <= r.started < back_at} == {f"{EU}_0"}
    assert traffic.records[-1].served_by == f"{US}_0"
    steps = [s["name"] for s in json.loads(text)["steps"]]
    assert steps == [f"check {US} is ready", f"ready {US}", f"wait until the router sees {US} up"]


def test_a_move_is_refused_when_the_target_lacks_a_version_or_is_not_ready(
    stores: dict[str, Endpoint], servers: dict[str, RunningServer], router: Router, tmp_path: Path
) -> None:
    model = scale_onnx(tmp_path / "o.onnx").read_bytes()
    publish(stores[US], "only-us", {"1": {"model.onnx": model}})
    for name, factor in ((US, 2.0), (EU, 3.0)):  # the same version, not the same bytes: no verified replica
        publish(
            stores[name],
            "twin",
            {"1": {"model.onnx": scale_onnx(tmp_path / f"twin-{name}.onnx", factor=factor).read_bytes()}},
        )
        publish(stores[name], "cold", {"1": {"model.onnx": model}})
    for name in ("only-us", "twin", "cold"):
        assert httpx.post(f"{servers[US].url}/v2/repository/models/{name}/load", timeout=60).status_code == 200
    assert httpx.post(f"{servers[EU].url}/v2/repository/models/twin/load", timeout=60).status_code == 200

    code, text = failover("--from-region", US, "--to-region", EU)
    assert code == 1
    assert "only-us:1 is not published in eu-west-1's store" in text
    assert "twin:1 in eu-west-1 differs from us-east-1's SHA256SUMS" in text
    assert "cold:1 is not loaded (READY) on eu-west-1's servers" in text
    assert router.api.stats()[0].status == "UP", "nothing moved"

    kill(servers[EU])
    code, text = failover("--from-region", US, "--to-region", EU)
    assert code == 1
    assert "eu-west-1 is not ready" in text

    code, text = failover("--from-region", US, "--to-region", EU, "--force")
    assert code == 0, text
    assert {r.status.split()[0] for r in router.api.stats() if r.server == f"{US}_0"} == {"MAINT"}


def test_a_killed_region_is_failed_over_by_the_router_with_no_failed_request(
    servers: dict[str, RunningServer], router: Router
) -> None:
    with Traffic(router.url, clients=4) as traffic:
        traffic.wait_for(300)
        os.kill(servers[US].process.pid, signal.SIGKILL)
        killed = time.monotonic()
        while any(r.status == "UP" for r in router.api.stats() if r.server == f"{US}_0"):
            assert time.monotonic() - killed < 5, router.output()
            time.sleep(0.01)
        detected = time.monotonic() - killed
        traffic.finish_after(300)
    # A response the kill cuts after its head was forwarded cannot be retried by any proxy (the server
    # writes head and body in two writes): at most the few in flight on the killed server.
    assert [r for r in traffic.failed if not r.cut] == []
    assert len(traffic.failed) <= traffic.clients
    assert detected <= 1.0
    assert traffic.records[-1].served_by == f"{EU}_0"
    assert f"Server http_{US}/{US}_0 is DOWN" in router.output()
    metrics = httpx.get(f"http://127.0.0.1:{router.metrics_port}/metrics", timeout=5).text
    assert f'haproxy_server_status{{proxy="http_{US}",server="{US}_0",state="DOWN"}} 1' in metrics
    assert f'haproxy_backend_active_servers{{proxy="http_{US}"}} 0' in metrics  # ModelServingRegionRoutedAway's
    # gRPC goes through the router too, to the region left.
    with grpcclient.InferenceServerClient(f"127.0.0.1:{router.grpc_port}") as client:
        x = grpcclient.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        answer = client.infer("scale", [x], headers={"x-client-region": US})
        assert answer.as_numpy("y").tolist() == [[2.0] * 4]
    # The dead region's servers cannot say what they served: its store says what it publishes.
    code, text = failover("--from-region", US, "--to-region", EU, "--json")
    assert code == 0, text
    assert "1 version(s) checked, 0 problem(s)" in text


def test_a_hung_region_keeps_every_request_within_the_timeout_with_no_failed_request(
    servers: dict[str, RunningServer], router: Router
) -> None:
    settings_timeout = 1.0  # router_settings' server_timeout_s
    try:
        with Traffic(router.url, clients=4) as traffic:
            traffic.wait_for(300)
            os.kill(servers[US].process.pid, signal.SIGSTOP)
            stopped = len(traffic.records)
            traffic.finish_after(500)
            traffic.wait_for(stopped + 500)
    finally:
        os.kill(servers[US].process.pid, signal.SIGCONT)
    # As when killed: an answer whose head left before the stop cannot be retried, only timed out.
    assert [r for r in traffic.failed if not r.cut] == []
    assert len(traffic.failed) <= traffic.clients
    assert max(r.seconds for r in traffic.records) < settings_timeout + 0.5
    assert traffic.records[-1].served_by == f"{EU}_0"

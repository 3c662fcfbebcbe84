"""A server in the target region (a real `modelserve serve` on the target's store) sees a replicated version
when it loads the model again, and never one whose copy has not been published yet."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from modelserve.regions.schema import State
from modelserve.regions.service import Context, open_context
from tests.builders import scale_onnx
from tests.e2e.server import serve
from tests.regions.conftest import Endpoint, publish, write_regions_file
from tests.s3 import CREDENTIALS

pytestmark = pytest.mark.e2e
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}


def answer(url: str) -> list[float]:
    response = httpx.post(f"{url}/v2/models/scale/infer", json=BODY, timeout=30)
    assert response.status_code == 200, response.text
    data: list[float] = response.json()["outputs"][0]["data"]
    return data


def version_2_replicated(regions: dict[str, Endpoint], tmp_path: Path) -> tuple[Context, dict[str, dict[str, bytes]]]:
    """Version 2 of `scale` (y = 2x) replicated to eu-west-1, and version 3 (y = 3x) built, not yet
    published; the jobs try each write once and give up after one attempt, so a refused write sticks."""
    versions = {v: {"model.onnx": scale_onnx(tmp_path / v / "model.onnx", factor=float(v)).read_bytes()} for v in "23"}
    publish(regions["us-east-1"], "scale", {"2": versions["2"]})
    path = write_regions_file(tmp_path / "regions.yaml", regions, request_attempts=1, max_attempts=1)
    ctx = open_context(path, None, owner="test")
    ctx.replicator.plan("scale", "2", "us-east-1", ["eu-west-1"])
    ctx.replicator.run_pending()
    assert ctx.jobs.jobs("scale")[0].state == State.REPLICATED
    return ctx, versions


def test_a_server_in_the_target_region_loads_a_version_only_once_it_is_published(
    regions: dict[str, Endpoint], tmp_path: Path
) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    ctx, versions = version_2_replicated(regions, tmp_path)

    env = {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": target.moto_url}
    repository = f"s3://{target.bucket}/models"
    with serve(
        repository, tmp_path / "server.log", "--model-control-mode", "explicit", "--load-model", "scale", env=env
    ) as server:
        assert answer(server.url) == [2.0] * 4

        publish(source, "scale", {"2": versions["2"], "3": versions["3"]})
        ctx.replicator.plan("scale", "3", "us-east-1", ["eu-west-1"])
        target.proxy.fail_next("503", lambda method, path: method == "PUT" and path.endswith("/scale/SHA256SUMS"))
        ctx.replicator.run_pending()
        job = ctx.jobs.jobs("scale", "3")[0]
        assert job.state == State.DEAD, "copied, verified, never published"
        assert job.files_done == 1

        reload = httpx.post(f"{server.url}/v2/repository/models/scale/load", timeout=60)
        assert reload.status_code == 200, reload.text
        assert answer(server.url) == [2.0] * 4, "version 3 is copied but not published: not served"

        ctx.replicator.plan("scale", "3", "us-east-1", ["eu-west-1"], again=True)
        started = time.monotonic()
        ctx.replicator.run_pending()
        assert ctx.jobs.jobs("scale", "3")[0].state == State.REPLICATED
        assert time.monotonic() - started < 10
        assert httpx.post(f"{server.url}/v2/repository/models/scale/load", timeout=60).status_code == 200
        assert answer(server.url) == [3.0] * 4


def test_a_polling_server_in_the_target_region_picks_up_a_replicated_version_once_it_is_published(
    regions: dict[str, Endpoint], tmp_path: Path
) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    ctx, versions = version_2_replicated(regions, tmp_path)

    env = {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": target.moto_url}
    poll = ("--model-control-mode", "poll", "--repository-poll-secs", "0.5")
    with serve(f"s3://{target.bucket}/models", tmp_path / "server.log", *poll, env=env) as server:
        assert answer(server.url) == [2.0] * 4

        publish(source, "scale", {"2": versions["2"], "3": versions["3"]})
        ctx.replicator.plan("scale", "3", "us-east-1", ["eu-west-1"])
        target.proxy.fail_next("503", lambda method, path: method == "PUT" and path.endswith("/scale/SHA256SUMS"))
        ctx.replicator.run_pending()
        assert ctx.jobs.jobs("scale", "3")[0].state == State.DEAD, "copied, verified, never published"
        time.sleep(2)  # four polls
        assert answer(server.url) == [2.0] * 4, "version 3 is copied but not published: not served"

        ctx.replicator.plan("scale", "3", "us-east-1", ["eu-west-1"], again=True)
        ctx.replicator.run_pending()
        assert ctx.jobs.jobs("scale", "3")[0].state == State.REPLICATED
        deadline = time.monotonic() + 20
        while answer(server.url) != [3.0] * 4:
            assert time.monotonic() < deadline, "the poll never served the published version"
            time.sleep(0.2)

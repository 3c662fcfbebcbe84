"""Replication under injected faults: 503/500 bursts, resets, cut downloads and flipped bytes between the
replicator and each region's S3 endpoint (moto behind tests/regions/faults.py)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from modelserve.regions.metrics import ReplicationMetrics
from modelserve.regions.schema import State
from modelserve.regions.service import Context, open_context
from modelserve.repository.remote import parse_checksums
from tests.regions.conftest import PART_MIN, Endpoint, publish, stored, write_regions_file

SOURCE, TARGET = "us-east-1", "eu-west-1"


def context(path: Path | None = None) -> Context:
    return open_context(path or Path(os.environ["REGIONS_FILE"]), None, owner=f"test-{time.monotonic_ns()}")


def run_until_settled(ctx: Context, budget_s: float) -> None:
    """Run due jobs until none is active, waiting out their backoff; fails past ``budget_s``."""
    deadline = time.monotonic() + budget_s
    while any(j.state not in (State.REPLICATED, State.DEAD) for j in ctx.jobs.jobs()):
        assert time.monotonic() < deadline, [(j.model, j.version, j.state, j.last_error) for j in ctx.jobs.jobs()]
        if not ctx.replicator.run_pending(deadline=deadline):
            time.sleep(0.02)  # jobs waiting out their backoff (tens of ms here)


def test_twenty_versions_replicate_under_thirty_percent_faults_and_none_is_published_corrupt(
    regions: dict[str, Endpoint], tmp_path: Path
) -> None:
    rng = random.Random(20)
    source, target = regions[SOURCE], regions[TARGET]
    originals: dict[str, bytes] = {}
    for number in range(1, 21):
        files = {"model.onnx": rng.randbytes(rng.choice([100, 4_000, 40_000, 3 * PART_MIN + 77]))}
        if number % 4 == 0:
            files["weights.bin"] = rng.randbytes(5 * PART_MIN + 5)  # six parts
        # The last ten as `aws s3 cp` writes them: their copies rely on the source's ETags.
        layout = "cp" if number > 10 else "put"
        publish(source, f"model-{number:02d}", {"1": files}, config=b"max_batch_size: 4\n", layout=layout)
        originals.update({f"model-{number:02d}/1/{name}": data for name, data in files.items()})
    path = write_regions_file(tmp_path / "faulty.yaml", regions, max_attempts=10)
    ctx = context(path)
    for number in range(1, 21):
        ctx.replicator.plan(f"model-{number:02d}", "1", SOURCE, [TARGET])
    for endpoint in (source, target):
        endpoint.proxy.rate = 0.3

    started = time.monotonic()
    run_until_settled(ctx, budget_s=40)
    elapsed = time.monotonic() - started

    jobs = ctx.jobs.jobs()
    assert [j.state for j in jobs] == [State.REPLICATED] * 20, [j.last_error for j in jobs]
    for endpoint in (source, target):
        endpoint.proxy.rate = 0.0
        assert set(endpoint.proxy.injected) == {"503", "500", "reset", "cut", "flip"}, endpoint.proxy.injected
    for number in range(1, 21):
        model = f"model-{number:02d}"
        copy = stored(target, model)
        sums = parse_checksums(copy.pop("SHA256SUMS").decode())
        assert set(sums) == set(copy), "every object of the target's folder is published, none more"
        for relative, data in copy.items():
            assert data == originals.get(f"{model}/{relative}", b"max_batch_size: 4\n"), f"{model}/{relative} corrupt"
    assert sum(j.retries for j in jobs) > 20
    assert sum(j.mismatches for j in jobs) >= 1, "flipped bytes were caught and re-copied"
    registry = CollectorRegistry()
    ReplicationMetrics(registry, ctx.jobs)
    lags = [s.value for m in registry.collect() if m.name == "model_serving_replication_lag_seconds" for s in m.samples]
    assert lags == [0.0] * 20
    assert registry.get_sample_value("model_serving_replication_queue_depth", {"region": TARGET}) == 0
    print(f"20 versions under 30 % faults: {elapsed:.1f} s, {sum(j.retries for j in jobs)} retries")


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_a_flipped_byte_is_caught_and_the_file_copied_again(regions: dict[str, Endpoint], direction: str) -> None:
    source, target = regions[SOURCE], regions[TARGET]
    data = os.urandom(3 * PART_MIN)
    publish(source, "m", {"1": {"model.onnx": data}})
    ctx = context()
    ctx.replicator.plan("m", "1", SOURCE, [TARGET])
    if direction == "download":
        source.proxy.fail_next("flip", lambda method, path: method == "GET" and "model.onnx" in path)
    else:
        target.proxy.fail_next("flip", lambda method, path: method == "PUT" and "partNumber=2" in path)

    run_until_settled(ctx, budget_s=20)

    job = ctx.jobs.jobs("m")[0]
    assert job.state == State.REPLICATED
    assert job.mismatches + job.retries >= 1
    assert (source.proxy.injected | target.proxy.injected)["flip"] == 1
    assert stored(target, "m")["1/model.onnx"] == data


def test_a_job_whose_target_keeps_failing_is_dead_lettered_with_its_last_error(
    regions: dict[str, Endpoint], tmp_path: Path
) -> None:
    publish(regions[SOURCE], "m", {"1": {"model.onnx": b"weights"}})
    path = write_regions_file(tmp_path / "regions.yaml", regions, max_attempts=2, request_attempts=2)
    ctx = context(path)
    ctx.replicator.plan("m", "1", SOURCE, [TARGET])
    regions[TARGET].proxy.rate = 1.0
    regions[TARGET].proxy.kinds = ("503",)
    try:
        run_until_settled(ctx, budget_s=20)
    finally:
        regions[TARGET].proxy.kinds = ("503", "500", "reset", "cut", "flip")

    job = ctx.jobs.jobs("m")[0]
    assert job.state == State.DEAD
    assert job.attempts == 2
    assert job.last_reason == "throttled"
    assert (job.last_error or "").startswith("attempt 2: HTTP 503"), job.last_error
    assert stored(regions[TARGET], "m") == {}, "nothing published"


def test_a_source_file_changed_after_publishing_is_never_published_and_its_job_dies(
    regions: dict[str, Endpoint], tmp_path: Path
) -> None:
    source, target = regions[SOURCE], regions[TARGET]
    publish(source, "m", {"1": {"model.onnx": b"as published"}})
    source.client.put_object(Bucket=source.bucket, Key="models/m/1/model.onnx", Body=b"changed in place")
    path = write_regions_file(tmp_path / "regions.yaml", regions, max_attempts=2, request_attempts=2)
    ctx = context(path)
    ctx.replicator.plan("m", "1", SOURCE, [TARGET])

    run_until_settled(ctx, budget_s=20)

    job = ctx.jobs.jobs("m")[0]
    assert (job.state, job.last_reason, job.attempts) == (State.DEAD, "mismatch", 2)
    assert job.mismatches == 4, "two copies per attempt, each discarded"
    copy = stored(target, "m")
    assert copy.get("SHA256SUMS", b"") == b"", "nothing published"
    assert "1/model.onnx" not in copy

"""Replication between two real S3 endpoints (moto), without faults: what a job copies, verifies and publishes."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelserve.regions.schema import State
from modelserve.regions.service import Context, open_context
from modelserve.repository.remote import parse_checksums
from tests.regions.conftest import PART_MIN, Endpoint, publish, stored


def context() -> Context:
    return open_context(Path(os.environ["REGIONS_FILE"]), None, owner="test")


def test_a_version_is_copied_verified_and_published_with_its_manifest_last(regions: dict[str, Endpoint]) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    big = os.urandom(5 * PART_MIN + 123)  # multipart: six parts, the last short
    publish(
        source, "resnet", {"1": {"model.onnx": b"one"}, "2": {"model.onnx": big, "vocab.txt": b"a\nb\n"}}, b"x: 1\n"
    )
    ctx = context()

    jobs = ctx.replicator.plan("resnet", "2", "us-east-1", ["eu-west-1"])
    assert [j.state for j in jobs] == [State.PENDING]
    assert ctx.replicator.run_pending() == 1

    job = ctx.jobs.jobs("resnet", "2")[0]
    assert job.state == State.REPLICATED, job.last_error
    assert (job.files_done, job.bytes_done, job.bytes_total) == (2, len(big) + 4, len(big) + 4)
    copy = stored(target, "resnet")
    assert copy["2/model.onnx"] == big
    assert copy["config.yaml"] == b"x: 1\n"
    assert "1/model.onnx" not in copy, "only the version asked for"
    sums = parse_checksums(copy["SHA256SUMS"].decode())
    assert sums == {
        "2/model.onnx": hashlib.sha256(big).hexdigest(),
        "2/vocab.txt": hashlib.sha256(b"a\nb\n").hexdigest(),
        "config.yaml": hashlib.sha256(b"x: 1\n").hexdigest(),
    }
    assert job.lag_s(ctx.clock()) == 0.0


def test_a_second_version_keeps_the_first_in_the_targets_manifest(regions: dict[str, Endpoint]) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    publish(source, "m", {"1": {"model.onnx": b"one"}, "2": {"model.onnx": b"two"}})
    ctx = context()
    ctx.replicator.plan("m", "1", "us-east-1", ["eu-west-1"])
    ctx.replicator.run_pending()
    ctx.replicator.plan("m", None, "us-east-1", ["eu-west-1", "ap-southeast-1"])
    ctx.replicator.run_pending()

    assert {(j.version, j.target_region, j.state) for j in ctx.jobs.jobs("m")} == {
        ("1", "eu-west-1", "replicated"),
        ("2", "eu-west-1", "replicated"),
        ("1", "ap-southeast-1", "replicated"),
        ("2", "ap-southeast-1", "replicated"),
    }
    assert set(parse_checksums(stored(target, "m")["SHA256SUMS"].decode())) == {"1/model.onnx", "2/model.onnx"}


def test_a_manifest_written_by_another_replicator_meanwhile_keeps_its_entries(regions: dict[str, Endpoint]) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    publish(source, "m", {"1": {"model.onnx": b"one"}, "2": {"model.onnx": b"two"}})
    ctx = context()
    ctx.replicator.plan("m", "1", "us-east-1", ["eu-west-1"])
    ctx.replicator.run_pending()
    three = hashlib.sha256(b"three").hexdigest()

    def another_replicator_publishes_version_3() -> None:
        sums = stored(target, "m")["SHA256SUMS"].decode() + f"{three}  3/model.onnx\n"
        target.client.put_object(Bucket=target.bucket, Key="models/m/3/model.onnx", Body=b"three")
        target.client.put_object(Bucket=target.bucket, Key="models/m/SHA256SUMS", Body=sums.encode())

    # Between this job's read of the target's SHA256SUMS and its write.
    target.proxy.before_next(
        lambda method, path: method == "PUT" and path.endswith("/m/SHA256SUMS"), another_replicator_publishes_version_3
    )
    ctx.replicator.plan("m", "2", "us-east-1", ["eu-west-1"])
    ctx.replicator.run_pending()

    assert ctx.jobs.jobs("m", "2")[0].state == State.REPLICATED
    assert set(parse_checksums(stored(target, "m")["SHA256SUMS"].decode())) == {
        "1/model.onnx",
        "2/model.onnx",
        "3/model.onnx",
    }


def test_two_replicators_on_one_database_run_every_job_once(regions: dict[str, Endpoint], database_url: str) -> None:
    source = regions["us-east-1"]
    for number in range(4):
        publish(source, f"m{number}", {"1": {"model.onnx": os.urandom(3 * PART_MIN)}})
    first = open_context(Path(os.environ["REGIONS_FILE"]), database_url, owner="first")
    second = open_context(Path(os.environ["REGIONS_FILE"]), database_url, owner="second")
    for number in range(4):
        first.replicator.plan(f"m{number}", "1", "us-east-1", ["eu-west-1", "ap-southeast-1"])

    with ThreadPoolExecutor(2) as pool:
        ran = sum(pool.map(lambda ctx: ctx.replicator.run_pending(), [first, second]))

    jobs = first.jobs.jobs()
    assert ran == 8
    assert [(j.state, j.attempts) for j in jobs] == [(State.REPLICATED, 1)] * 8, "each job run once, by one of them"
    assert {j.lease_owner for j in jobs} == {None}
    first.engine.dispose()
    second.engine.dispose()


def test_a_file_left_in_the_targets_version_folder_is_removed_before_publishing(regions: dict[str, Endpoint]) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    publish(source, "m", {"1": {"model.onnx": b"weights"}})
    target.client.put_object(Bucket=target.bucket, Key="models/m/1/old-model.onnx", Body=b"an earlier copy")
    ctx = context()
    ctx.replicator.plan("m", "1", "us-east-1", ["eu-west-1"])

    ctx.replicator.run_pending()

    copy = stored(target, "m")
    assert set(copy) == {"1/model.onnx", "SHA256SUMS"}, "a published version holds only what its manifest lists"

"""A source whose ETag vouches for the copy's spares it the MD5 of every byte sent: a file written as
``aws s3 cp`` writes it (parts of the copy's part size) is copied without Content-MD5 on its parts and
checked by the completed object's ETag; one written otherwise, or under a KMS key, is hashed as sent; a
vouched copy that arrives corrupt is copied again, hashed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelserve.regions.schema import State
from modelserve.regions.service import open_context
from tests.regions.conftest import PART_MIN, Endpoint, publish, stored

SOURCE, TARGET = "us-east-1", "eu-west-1"


def replicate(regions: dict[str, Endpoint], model: str) -> None:
    ctx = open_context(Path(os.environ["REGIONS_FILE"]), None, owner="test")
    ctx.replicator.plan(model, "1", SOURCE, [TARGET])
    for _ in range(20):
        if not ctx.replicator.run_pending():
            break
    job = ctx.jobs.jobs(model)[0]
    assert job.state == State.REPLICATED, job.last_error


def part_md5s(endpoint: Endpoint) -> list[str]:
    """The Content-MD5 header of every part upload the endpoint saw, in order ("" where none was sent)."""
    return [md5 for method, path, md5 in endpoint.proxy.sent if method == "PUT" and "partNumber=" in path]


@pytest.mark.parametrize(
    ("layout", "encryption", "vouched"),
    [
        ("cp", None, True),
        ("put", None, False),  # one PUT: its ETag is not that of a copy in parts
        ("cp", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/models"}, False),
    ],
    ids=["aws-s3-cp", "one-put", "sse-kms"],
)
def test_parts_carry_their_md5_unless_the_sources_etag_vouches_for_them(
    regions: dict[str, Endpoint], layout: str, encryption: dict[str, str] | None, vouched: bool
) -> None:
    source, target = regions[SOURCE], regions[TARGET]
    data = os.urandom(5 * PART_MIN + 11)
    publish(source, "m", {"1": {"model.onnx": data}}, layout=layout, encryption=encryption)
    heads = source.client.head_object(Bucket=source.bucket, Key="models/m/1/model.onnx")
    assert heads["ETag"].strip('"').endswith("-6") == (layout == "cp")

    replicate(regions, "m")

    assert stored(target, "m")["1/model.onnx"] == data
    md5s = part_md5s(target)
    assert len(md5s) == 6
    assert all(md5 == "" for md5 in md5s) if vouched else all(md5s), md5s
    copy = target.client.head_object(Bucket=target.bucket, Key="models/m/1/model.onnx")
    if vouched:
        assert copy["ETag"] == heads["ETag"], "the copy's ETag is the source's"


def test_a_vouched_copy_that_arrives_corrupt_is_caught_by_its_etag_and_copied_again_hashed(
    regions: dict[str, Endpoint],
) -> None:
    source, target = regions[SOURCE], regions[TARGET]
    data = os.urandom(4 * PART_MIN)
    publish(source, "m", {"1": {"model.onnx": data}}, layout="cp")
    target.proxy.fail_next("flip", lambda method, path: method == "PUT" and "partNumber=3" in path)

    replicate(regions, "m")

    assert target.proxy.injected["flip"] == 1
    assert stored(target, "m")["1/model.onnx"] == data
    md5s = part_md5s(target)
    assert md5s[:4] == [""] * 4, "the first copy relied on the source's ETag"
    assert len(md5s) == 8, md5s
    assert all(md5s[4:]), "the second hashed what it sent"
    ctx = open_context(Path(os.environ["REGIONS_FILE"]), None, owner="reader")
    assert ctx.jobs.jobs("m")[0].mismatches == 1

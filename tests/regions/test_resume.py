"""Jobs survive their replicator: a multipart copy resumes from its last completed part in a new process,
and a download cut mid-body is asked for again from the first missing byte (Range), not from the start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelserve.regions.jobs import progress_of
from modelserve.regions.schema import State
from modelserve.regions.service import open_context
from tests.regions.conftest import PART_MIN, Endpoint, publish, stored, write_regions_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("layout", ["put", "cp"])  # parts checked by their MD5s, or vouched for by the source's ETag
def test_a_killed_replicators_multipart_copy_resumes_from_its_last_completed_part(
    regions: dict[str, Endpoint], tmp_path: Path, layout: str
) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    data = os.urandom(10 * PART_MIN)
    publish(source, "big", {"1": {"model.onnx": data}}, layout=layout)
    path = write_regions_file(tmp_path / "regions.yaml", regions, max_parts=1, lease_s=1)
    target.proxy.delay_s = 0.2  # each part takes a while: the replicator is killed part-way
    database = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    env = {**os.environ, "REGIONS_FILE": str(path), "DATABASE_URL": database}
    command = [
        sys.executable,
        "-m",
        "modelserve",
        "regions",
        "replicate",
        "-m",
        "big:1",
        "--target-regions",
        "eu-west-1",
    ]
    log = tmp_path / "replicator.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    ctx = open_context(path, database, owner="after-restart")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, [(j.state, j.progress, j.last_error) for j in ctx.jobs.jobs()]
            jobs = ctx.jobs.jobs("big")
            if jobs and len(progress_of(jobs[0]).get("1/model.onnx", {}).get("parts", {})) >= 3:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    target.proxy.delay_s = 0.0
    before = progress_of(ctx.jobs.jobs("big")[0])["1/model.onnx"]
    target.proxy.seen.clear()

    deadline = time.monotonic() + 10
    while not ctx.replicator.run_pending():  # the dead process's lease runs out after lease_s
        assert time.monotonic() < deadline
        time.sleep(0.05)

    job = ctx.jobs.jobs("big")[0]
    assert job.state == State.REPLICATED, job.last_error
    assert stored(target, "big")["1/model.onnx"] == data
    uploads = [p for m, p, _ in target.proxy.seen if m == "PUT" and f"uploadId={before['upload_id']}" in p]
    sent = sorted(int(p.split("partNumber=")[1].split("&")[0]) for p in uploads)
    assert sent, "the resumed copy uploaded the rest"
    assert not set(sent) & {int(n) for n in before["parts"]}, "no completed part is uploaded again"
    assert not [p for m, p, _ in target.proxy.seen if m == "POST" and p.endswith("?uploads")], "same upload"
    md5s = {md5 for m, p, md5 in target.proxy.sent if m == "PUT" and f"uploadId={before['upload_id']}" in p}
    assert md5s == {""} if layout == "cp" else "" not in md5s, md5s


def test_a_cut_download_is_asked_for_again_from_the_first_missing_byte(regions: dict[str, Endpoint]) -> None:
    source, target = regions["us-east-1"], regions["eu-west-1"]
    data = os.urandom(3 * PART_MIN)
    publish(source, "m", {"1": {"model.onnx": data}})
    source.proxy.fail_next("cut", lambda method, path: method == "GET" and path.endswith("/1/model.onnx"))
    ctx = open_context(Path(os.environ["REGIONS_FILE"]), None, owner="test")
    ctx.replicator.plan("m", "1", "us-east-1", ["eu-west-1"])

    ctx.replicator.run_pending()

    assert ctx.jobs.jobs("m")[0].state == State.REPLICATED
    assert stored(target, "m")["1/model.onnx"] == data
    # One GET for the whole file (no Range: a store answers a range with a copy of the slice), cut halfway
    # (in its second 64 KiB part), asked again from the first byte not received (at worst the start of
    # the read that broke: the part's), never from the start.
    ranges = [r for m, p, r in source.proxy.seen if m == "GET" and p.endswith("/1/model.onnx")]
    assert len(ranges) == 2, ranges
    assert ranges[0] == ""
    first, last = (int(x) for x in ranges[1].removeprefix("bytes=").split("-"))
    assert PART_MIN <= first <= len(data) // 2, ranges
    assert last == len(data) - 1

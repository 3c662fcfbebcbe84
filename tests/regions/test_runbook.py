"""The runbook's replication commands, exactly as written, against three local regions.

One runs as the runbook writes it (``python -m src.replication.model_replicator`` from the repository
root, a new process); the rest go through the same entry point in this process, for time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelserve.regions.cli import app
from src.replication.model_replicator import translate
from tests.regions.conftest import PART_MIN, Endpoint, publish, stored

ROOT = Path(__file__).resolve().parents[2]
MODEL = "model-v1.0.0"


def runbook(line: str) -> tuple[int, str]:
    """Run one runbook line (the part after ``python -m src.replication.model_replicator``) in this process."""
    result = CliRunner().invoke(app, translate(line.split()), env={"COLUMNS": "300"}, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def published(regions: dict[str, Endpoint]) -> dict[str, Endpoint]:
    publish(regions["us-east-1"], MODEL, {"1": {"model.onnx": os.urandom(3 * PART_MIN), "labels.txt": b"cat\n"}})
    return regions


def test_the_runbooks_replication_commands_work_as_written(published: dict[str, Endpoint]) -> None:
    code, text = runbook(f"--model-id {MODEL} --check-status")
    assert code == 1
    assert "no replication job" in text

    code, text = runbook(f"--model-id {MODEL} --source-region us-east-1 --target-regions eu-west-1")
    assert code == 0, text
    assert "replicated" in text
    assert "eu-west-1" in text
    assert stored(published["eu-west-1"], MODEL)["1/labels.txt"] == b"cat\n"

    code, text = runbook(f"--model-id {MODEL} --replicate")  # every other region
    assert code == 0, text
    assert "ap-southeast-1" in text

    code, text = runbook(f"--model-id {MODEL} --status")
    assert code == 0, text
    assert text.count("replicated") == 2

    code, text = runbook(f"--verify-checksum --model-id {MODEL}")
    assert code == 0, text
    assert "6 of 6 file copies match; 0 mismatch(es)" in text

    code, text = runbook("--queue-depth")
    assert code == 0
    assert "queue depth: 0" in text

    code, text = runbook("--list-pending")
    assert code == 0
    assert "nothing pending" in text


def test_verify_checksum_fails_on_a_corrupted_copy(published: dict[str, Endpoint]) -> None:
    assert runbook(f"--model-id {MODEL} --replicate")[0] == 0
    target = published["eu-west-1"]
    target.client.put_object(Bucket=target.bucket, Key=f"models/{MODEL}/1/labels.txt", Body=b"dog\n")

    code, text = runbook(f"--verify-checksum --model-id {MODEL}")

    assert code == 1
    assert "mismatch" in text
    assert "eu-west-1" in text
    job = json.loads(runbook(f"--model-id {MODEL} --status --json")[1])
    assert [j["mismatches"] for j in job if j["target_region"] == "eu-west-1"] == [1]

    # The runbook's remedy: delete the corrupted copy and replicate again.
    target.client.delete_object(Bucket=target.bucket, Key=f"models/{MODEL}/1/labels.txt")
    assert runbook(f"--model-id {MODEL} --replicate")[0] == 0
    assert runbook(f"--verify-checksum --model-id {MODEL}")[0] == 0
    assert stored(target, MODEL)["1/labels.txt"] == b"cat\n"


def test_the_module_path_runs_from_the_repository_root(published: dict[str, Endpoint]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "src.replication.model_replicator", "--queue-depth"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "queue depth: 0" in result.stdout


def test_a_runbook_line_that_names_nothing_to_do_says_what_to_add() -> None:
    with pytest.raises(SystemExit) as caught:
        translate(["--model-id", MODEL])
    assert caught.value.code == 2


def test_replicating_one_model_runs_its_jobs_not_the_whole_queue(published: dict[str, Endpoint]) -> None:
    publish(published["us-east-1"], "other", {"1": {"model.onnx": b"weights"}})
    queued = CliRunner().invoke(app, ["replicate", "-m", "other", "--no-wait"], env={"COLUMNS": "300"})
    assert queued.exit_code == 0, queued.output
    assert "queued 2 job(s)" in queued.output

    assert runbook(f"--model-id {MODEL} --replicate")[0] == 0

    pending = json.loads(runbook("--list-pending --json")[1])
    assert {(j["model"], j["state"]) for j in pending} == {("other", "pending")}

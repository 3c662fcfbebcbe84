"""`modelserve tune` against real servers it starts itself: the table, the choice within the budget,
the config it writes, the plot, and a budget nothing meets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelserve.bench.tune import Candidate, Point, best, frontier, grid
from modelserve.repository.config import ModelConfig


def tune(repository: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelserve", "tune", "mlp", "--model-repository", str(repository)]
    command += ["--clients", "4", "--duration", "0.5", "--warmup", "0.2", "--max-minutes", "2", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture
def repository(built_repository: Path, tmp_path: Path) -> Path:
    shutil.copytree(built_repository / "mlp", tmp_path / "repository" / "mlp")
    return tmp_path / "repository"


def test_the_fastest_candidate_within_the_budget_is_chosen_and_written(repository: Path, tmp_path: Path) -> None:
    config = repository / "mlp" / "config.yaml"
    config.write_text("platform: onnx  # the operator's own\n")
    plot = tmp_path / "frontier.png"

    run = tune(
        repository, "--latency-budget-ms", "1000", "--max-batch-size", "1,8", "--queue-delay-ms", "1",
        "--instance-count", "1", "--write", "--plot", str(plot),
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert run.stdout.count("chosen") == 2, run.stdout  # the table's mark and the closing line
    chosen = 8 if "chosen: max_batch_size 8," in run.stdout else 1
    assert f"chosen: max_batch_size {chosen}, delay 1 ms, 1 instance(s)" in run.stdout
    written = ModelConfig.from_file(config)
    assert written.max_batch_size == chosen
    assert written.instance_count == 1
    assert written.dynamic_batching is not None
    assert written.dynamic_batching.max_queue_delay_ms == 1
    assert written.platform == "onnx"  # what the operator's config said is kept
    assert (repository / "mlp" / "config.yaml.bak").read_text() == "platform: onnx  # the operator's own\n"
    assert plot.stat().st_size > 1000


def test_a_budget_no_candidate_meets_writes_nothing(repository: Path) -> None:
    config = repository / "mlp" / "config.yaml"
    before = config.read_text() if config.exists() else None

    run = tune(repository, "--latency-budget-ms", "0.01", "--max-batch-size", "1", "--queue-delay-ms", "0",
               "--instance-count", "1", "--write")  # fmt: skip

    assert run.returncode == 1
    assert "no candidate kept p99 within 0.01 ms" in run.stderr
    assert (config.read_text() if config.exists() else None) == before


def point(rate: float, p99: float, errors: int = 0) -> Point:
    return Point(Candidate(8, 0, 1, None), rate, p99 / 2, p99, errors)


def test_the_frontier_holds_the_points_nothing_beats_on_both_counts() -> None:
    fast, quick, dominated, slow_and_late = point(100, 10), point(50, 2), point(40, 5), point(10, 20)

    assert frontier([fast, quick, dominated, slow_and_late]) == [fast, quick]
    assert best([fast, quick, dominated], budget_ms=5) is quick
    assert best([fast, quick], budget_ms=1) is None
    assert best([point(100, 1, errors=3), quick], budget_ms=5) is quick  # a point with errors is never chosen


def test_the_grid_varies_the_batch_size_slowest_and_sets_every_field() -> None:
    candidates = grid([1, 8], [0, 2], [1], [None, 2])

    assert [c.max_batch_size for c in candidates] == [1, 1, 1, 1, 8, 8, 8, 8]
    config = candidates[-1].config({"platform": "onnx", "dynamic_batching": {"max_queue_size": 5}})
    assert config == {
        "platform": "onnx",
        "max_batch_size": 8,
        "dynamic_batching": {"max_queue_size": 5, "max_queue_delay_ms": 2},
        "instance_count": 1,
        "parameters": {"intra_op_num_threads": 2},
    }

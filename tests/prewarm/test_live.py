"""A policy learning from the traffic history before it drives a server: a model asked for every ten
minutes all of yesterday is pre-loaded ahead of its next request after a restart, on SQLite and on a
real PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelserve.history.flusher import HistoryFlusher
from modelserve.history.recorder import TrafficRecorder
from modelserve.models.budget import MemoryBudget
from modelserve.models.memory import MIB, rss_bytes
from modelserve.prewarm.live import LivePrewarmer
from modelserve.prewarm.predictive import PredictivePolicy
from tests.builders import matmul_onnx
from tests.clock import Clock
from tests.models.conftest import Factory

PERIOD_S = 600
DAY_S = 86_400
NOW = 1_796_256_000.0  # a whole day, in UTC


def yesterday_every_ten_minutes(database_url: str) -> HistoryFlusher:
    """A history where model a was asked for once every PERIOD_S over the day before NOW, at :30 s."""
    clock = Clock(0.0)
    recorder = TrafficRecorder(60, clock)
    for start in range(int(NOW) - DAY_S, int(NOW), PERIOD_S):
        clock.now = start + 30
        recorder.record("a", "1", 0.0)
    flusher = HistoryFlusher(recorder, database_url, interval_s=3600, retention_s=0)
    assert flusher.flush()
    return flusher


async def test_a_restarted_server_pre_loads_what_the_history_says_comes_next(
    database_url: str, tmp_path: Path, make_manager: Factory, executor: ThreadPoolExecutor
) -> None:
    for name in ("a", "b"):
        matmul_onnx(tmp_path / name / "1" / "model.onnx", features=64)
    budget = MemoryBudget("CPU", 64 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    manager = make_manager(tmp_path, on_demand=True, budgets=[budget])
    prewarmer = LivePrewarmer(PredictivePolicy(), manager, budget)
    flusher = yesterday_every_ten_minutes(database_url)
    try:
        told = prewarmer.learn_from(flusher.reader(), 60, NOW)
    finally:
        flusher.close()

    assert told == DAY_S // PERIOD_S
    next_request = NOW - PERIOD_S + 30 + PERIOD_S
    quiet = prewarmer.policy.tick(next_request - PERIOD_S / 2, prewarmer)
    assert "a" not in quiet.load  # not yet: nothing is held ahead of time for minutes
    ahead = prewarmer.policy.tick(next_request - 0.5, prewarmer)
    assert ahead.load == ("a",)

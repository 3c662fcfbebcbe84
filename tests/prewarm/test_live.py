"""The pre-warmer on a real ModelManager: a policy learning from the traffic history before it drives a
server (a model asked for every ten minutes all of yesterday is pre-loaded ahead of its next request after a
restart, on SQLite and on a real PostgreSQL), and what it keeps for operators: its decisions with reasons,
pre-loads nobody used, and what lru would have had on the same requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from modelserve.history.flusher import HistoryFlusher
from modelserve.history.recorder import TrafficRecorder
from modelserve.models.budget import MemoryBudget
from modelserve.models.memory import MIB, rss_bytes
from modelserve.observability.metrics import Metrics
from modelserve.prewarm.live import LivePrewarmer
from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.policy import CPU, GPU, CacheView, Decision
from modelserve.prewarm.predictive import PredictivePolicy
from modelserve.prewarm.report import report
from modelserve.types import InferenceRequest
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


class Scripted(LRUPolicy):
    """lru that also loads ``a`` at its first tick and evicts it at the first tick it is READY, each with a
    reason."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0
        self.evicted = False

    def tick(self, now: float, view: CacheView) -> Decision:
        self.ticks += 1
        if self.ticks == 1:
            return Decision(load=("a",), wake_at=now + 0.05, why={"a": "a is due"})
        if not self.evicted and view.is_ready("a"):
            self.evicted = True
            return Decision(evict=("a",), why={"a": "a is not needed after all"})
        return Decision(wake_at=now + 0.05)


def counted(metrics: Metrics, name: str, model: str) -> float:
    return metrics.registry.get_sample_value(name, {"model": model}) or 0.0


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_it_keeps_its_decisions_with_reasons_unused_pre_loads_and_what_lru_would_have_had(
    tmp_path: Path, make_manager: Factory
) -> None:
    for name in ("a", "b", "c"):
        matmul_onnx(tmp_path / name / "1" / "model.onnx", features=64)
    budget = MemoryBudget("CPU", 64 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    manager = make_manager(tmp_path, on_demand=True, budgets=[budget])
    metrics = Metrics(CollectorRegistry())
    prewarmer = LivePrewarmer(Scripted(), manager, budget, observer=metrics.prewarming)
    running = asyncio.create_task(prewarmer.run())
    try:
        await until(lambda: len(prewarmer.steps) == 2)
        loaded, evicted = prewarmer.steps
        assert (loaded.step.action, loaded.step.model, loaded.step.reason, loaded.outcome) == (
            "load",
            "a",
            "a is due",
            "done",
        )
        assert (evicted.step.action, evicted.step.reason, evicted.outcome) == (
            "evict",
            "a is not needed after all",
            "done",
        )
        assert prewarmer.unused_loads["a"] == 1  # evicted before any request used it
        assert counted(metrics, "model_serving_prewarm_unused_loads_total", "a") == 1

        x = {"x": np.ones((1, 64), np.float32)}
        for name in ("b", "b", "a"):
            await manager.infer(InferenceRequest(name, x))
        # The server was cold on b's first request and on a's (evicted); lru would have been cold on both
        # first requests too, and warm on b's second: nothing avoided, nothing lost.
        assert prewarmer.cold_starts == {"b": 1, "a": 1}
        assert prewarmer.shadow.cold_starts == {"b": 1, "a": 1}
        assert counted(metrics, "model_serving_prewarm_lru_cold_starts_total", "b") == 1
        assert counted(metrics, "model_serving_prewarm_cold_starts_avoided", "a") == 0
        report_ = report(prewarmer, ["a", "b", "c"], time.time())
        assert report_["policy"] == "scripted"
        assert [d["outcome"] for d in report_["decisions"]] == ["done", "done"]
        assert report_["decisions"][0]["action"] == "evict"  # the latest first
        rows = {row["model"]: row for row in report_["models"]}
        assert set(rows) == {"a", "b", "c"}
        assert (rows["a"]["cold_starts"], rows["a"]["unused_loads"], rows["a"]["loaded"]) == (1, 1, True)
        assert rows["c"]["pattern"] == "none"
    finally:
        running.cancel()


async def test_a_model_that_held_gpu_memory_is_planned_on_the_gpu_budget(tmp_path: Path, make_manager: Factory) -> None:
    """The accounting a GPU host runs, through the budgets' own records: a version measured holding GPU memory
    is a GPU model of that size; the others are planned by host memory."""
    for name in ("a", "b"):
        matmul_onnx(tmp_path / name / "1" / "model.onnx", features=64)
    host = MemoryBudget("CPU", 64 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    gpu = MemoryBudget("GPU", 1024 * MIB, "GPU_MEMORY_FRACTION", lambda: 0)
    manager = make_manager(tmp_path, on_demand=True, budgets=[host])
    prewarmer = LivePrewarmer(PredictivePolicy(), manager, host, gpu_budget=gpu)
    gpu.learn("a", 1, 300 * MIB)  # what a's last load on a GPU held
    host.learn("b", 1, 2 * MIB)
    assert (prewarmer.info("a").device, prewarmer.info("a").size_mb) == (GPU, 300.0)
    assert (prewarmer.info("b").device, prewarmer.info("b").size_mb) == (CPU, 2.0)
    assert (prewarmer.budget_of(GPU), prewarmer.budget_of(CPU)) == (1024.0, 64.0)
    no_gpu = LivePrewarmer(PredictivePolicy(), manager, host)
    assert no_gpu.budget_of(GPU) == 0.0

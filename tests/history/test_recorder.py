"""The hot path of the traffic history: what each request adds to the in-memory buckets."""

from __future__ import annotations

import threading

import pytest

from modelserve.errors import (
    CircuitOpen,
    ClientDisconnected,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    ShuttingDown,
)
from modelserve.history.recorder import RECENT_LIMIT, TrafficRecorder
from modelserve.history.schema import LATENCY_BOUNDS, OUTCOMES
from tests.clock import Clock


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (ModelNotReady("loading"), "not_ready"),
        (CircuitOpen("open"), "not_ready"),
        (Overloaded("full"), "rejected"),
        (ShuttingDown("draining"), "rejected"),
        (InvalidInput("bad shape"), "invalid"),
        (DeadlineExceeded("late"), "timed_out"),
        (ClientDisconnected("gone"), "timed_out"),
        (InferenceFailed("boom"), "failed"),
        (RuntimeError("bug"), "failed"),
    ],
)
def test_each_error_is_counted_in_its_outcome_column(error: Exception | None, outcome: str) -> None:
    recorder = TrafficRecorder(60, Clock(1_000_000.0))
    recorder.record_request("mlp", "1", 0.001, error)
    (bucket,) = recorder.take().values()
    assert bucket.counts[: len(OUTCOMES)] == [int(name == outcome) for name in OUTCOMES]


def test_requests_are_bucketed_by_arrival_not_by_answer() -> None:
    start = 16_667 * 60  # buckets start at multiples of their width since the epoch
    recorder = TrafficRecorder(60, Clock(start + 20.5))
    recorder.record_request("mlp", "1", 0.002, None)
    recorder.record_request("mlp", "1", 30.0, None)  # arrived 30 s ago: the bucket before
    recorder.record_request("mlp", "2", 0.002, InvalidInput("bad"))
    buckets = recorder.take()
    assert set(buckets) == {("mlp", "1", start), ("mlp", "1", start - 60), ("mlp", "2", start)}
    now = buckets[("mlp", "1", start)]
    assert now.counts[OUTCOMES.index("ok")] == 1
    assert now.latency_sum_s == pytest.approx(0.002)
    assert buckets[("mlp", "2", start)].counts[OUTCOMES.index("invalid")] == 1


@pytest.mark.parametrize(
    ("latency_s", "column"), [(0.0004, 0), (0.001, 0), (0.0011, 1), (0.05, 4), (2.0, 7), (10.0, 8), (11.0, 9)]
)
def test_latency_lands_in_its_histogram_column(latency_s: float, column: int) -> None:
    recorder = TrafficRecorder(60, Clock(1_000_000.0))
    recorder.record("mlp", "1", latency_s)
    (bucket,) = recorder.take().values()
    histogram = bucket.counts[len(OUTCOMES) :]
    assert len(histogram) == len(LATENCY_BOUNDS) + 1
    assert histogram == [1 if i == column else 0 for i in range(len(histogram))]


def test_take_empties_and_give_back_adds_up() -> None:
    recorder = TrafficRecorder(60, Clock(1_000_000.0))
    for _ in range(3):
        recorder.record("mlp", "1", 0.002)
    taken = recorder.take()
    assert recorder.pending() == 0
    recorder.record("mlp", "1", 0.002)
    assert recorder.give_back(taken, keep=1) == {}
    (bucket,) = recorder.take().values()
    assert bucket.counts[OUTCOMES.index("ok")] == 4
    assert bucket.latency_sum_s == pytest.approx(0.008)


def test_concurrent_recording_and_taking_lose_nothing() -> None:
    recorder = TrafficRecorder(60, Clock(1_000_000.0))
    per_thread, threads = 20_000, 4
    taken: list[int] = []
    done = threading.Event()

    def taker() -> None:
        while not done.is_set():
            taken.extend(sum(b.counts[: len(OUTCOMES)]) for b in recorder.take().values())

    def writer() -> None:
        for _ in range(per_thread):
            recorder.record("mlp", "1", 0.002)

    taking = threading.Thread(target=taker)
    taking.start()
    writers = [threading.Thread(target=writer) for _ in range(threads)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=60)
    done.set()
    taking.join(timeout=60)
    taken.extend(sum(b.counts[: len(OUTCOMES)]) for b in recorder.take().values())
    assert sum(taken) == per_thread * threads


def test_recent_arrivals_and_inter_arrival_times() -> None:
    clock = Clock(1_000_000.0)
    recorder = TrafficRecorder(60, clock)
    for offset in (0.0, 2.0, 5.0):
        clock.now = 1_000_000.0 + offset
        recorder.record("mlp", "1", 0.0)
    recorder.record("iris", "1", 0.0)
    assert recorder.inter_arrival_times("mlp", within_s=60) == [2.0, 3.0]
    assert recorder.recent_arrivals("mlp", within_s=1) == [1_000_005.0]
    clock.now = 1_000_900.0
    recorder.record("mlp", "1", 0.0)
    assert recorder.recent_arrivals("mlp", within_s=3600) == [1_000_900.0], "only the last 10 minutes are kept"
    assert recorder.recent_arrivals("unknown") == []


def test_recent_arrivals_are_bounded_per_model() -> None:
    recorder = TrafficRecorder(60, Clock(1_000_000.0))
    for _ in range(RECENT_LIMIT + 10):
        recorder.record("mlp", "1", 0.0)
    assert len(recorder.recent_arrivals("mlp")) == RECENT_LIMIT

"""The traffic history while its database cannot be written: buckets wait in memory up to
HISTORY_MAX_PENDING_BUCKETS, the oldest beyond it are dropped, and each write that drops says so in the
log and in ``model_serving_history_dropped_buckets_total``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from modelserve.config import Settings
from modelserve.history.flusher import MAX_PENDING_BUCKETS, HistoryFlusher
from modelserve.history.recorder import TrafficRecorder
from modelserve.observability.metrics import Metrics
from tests.clock import Clock
from tests.protocol.serving import metric_value, metrics_of, serving, tensor, v2_body, wait_until

START = 1_700_000_040  # a bucket start: 2023-11-14 22:14:00 UTC
UNREACHABLE = "postgresql+psycopg://nobody:secret-password@127.0.0.1:1/none"
DROPPED = "model_serving_history_dropped_buckets_total"


def _minutes(recorder: TrafficRecorder, clock: Clock, first: int, count: int, requests: int = 1) -> None:
    """``requests`` requests of model mlp in each of ``count`` one-minute buckets from minute ``first``."""
    for minute in range(first, first + count):
        clock.now = START + minute * 60 + 1
        for _ in range(requests):
            recorder.record("mlp", "1", 0.0)


def _starts(recorder: TrafficRecorder) -> list[int]:
    return sorted((start - START) // 60 for _, _, start in recorder.take())


def test_give_back_keeps_the_newest_and_returns_the_oldest() -> None:
    clock = Clock(START)
    recorder = TrafficRecorder(60, clock)
    _minutes(recorder, clock, 0, 10, requests=3)
    taken = recorder.take()

    dropped = recorder.give_back(taken, keep=4)

    assert sorted((start - START) // 60 for _, _, start in dropped) == [0, 1, 2, 3, 4, 5]
    assert all(bucket.counts[0] == 3 for bucket in dropped.values())
    assert _starts(recorder) == [6, 7, 8, 9]


def test_what_was_recorded_since_the_take_is_kept_and_adds_up() -> None:
    clock = Clock(START)
    recorder = TrafficRecorder(60, clock)
    _minutes(recorder, clock, 0, 3)
    taken = recorder.take()
    _minutes(recorder, clock, 2, 2)  # minute 2 again, and a new minute 3, while the write was failing

    assert len(recorder.give_back(taken, keep=2)) == 1  # minute 0
    requests = {(start - START) // 60: bucket.counts[0] for (_, _, start), bucket in recorder.take().items()}
    assert requests == {1: 1, 2: 2, 3: 1}


def test_an_outage_keeps_at_most_the_cap_and_counts_and_logs_what_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(START)
    recorder = TrafficRecorder(60, clock)
    metrics = Metrics(CollectorRegistry())
    flusher = HistoryFlusher(
        recorder, UNREACHABLE, 3600, 0, max_pending_buckets=5, on_dropped=metrics.observe_history_dropped
    )

    with caplog.at_level(logging.WARNING, logger="modelserve.history"):
        _minutes(recorder, clock, 0, 4, requests=2)
        assert not flusher.flush()  # four buckets: under the cap, none dropped
        assert recorder.pending() == 4
        _minutes(recorder, clock, 4, 4, requests=2)
        assert not flusher.flush()  # eight: the three oldest go
        assert recorder.pending() == 5
        _minutes(recorder, clock, 8, 2, requests=2)
        assert not flusher.flush()  # seven: two more go
        assert recorder.pending() == 5

    assert metrics.registry.get_sample_value(DROPPED) == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "traffic history: dropped 3 bucket(s) (6 request(s), 2023-11-14 22:14:00 to 2023-11-14 22:17:00 UTC) "
        "waiting for the database, beyond HISTORY_MAX_PENDING_BUCKETS (5)",
        "traffic history: dropped 2 bucket(s) (4 request(s), 2023-11-14 22:17:00 to 2023-11-14 22:19:00 UTC) "
        "waiting for the database, beyond HISTORY_MAX_PENDING_BUCKETS (5)",
    ]
    assert _starts(recorder) == [5, 6, 7, 8, 9]  # the newest, waiting for the database to come back
    flusher.close()


def test_the_server_caps_pending_buckets_by_default() -> None:
    assert Settings().history_max_pending_buckets == MAX_PENDING_BUCKETS


def test_a_server_whose_database_is_down_reports_the_dropped_buckets_on_its_metrics(built_repository: Path) -> None:
    """The flusher the server builds is told where to count its drops: a cap of one bucket and requests to
    two models (a bucket each) drop one at the first failed write that holds both."""
    simple = v2_body(*(tensor(name, "INT32", [1, 16], [1] * 16) for name in ("INPUT0", "INPUT1")))
    mlp = v2_body(tensor("input", "FP32", [1, 16], [0.5] * 16))
    with serving(
        built_repository,
        database_url=UNREACHABLE,
        history_flush_interval_sec=0.05,
        history_max_pending_buckets=1,
    ) as client:
        assert client.post("/v2/models/simple/infer", content=simple).status_code == 200
        assert client.post("/v2/models/mlp/infer", content=mlp).status_code == 200
        wait_until(lambda: metric_value(metrics_of(client), DROPPED) >= 1, f"{DROPPED} to count a dropped bucket")


def test_requests_recorded_while_buckets_come_back_are_never_lost() -> None:
    recorder = TrafficRecorder(60)
    done = threading.Event()
    recorded = [0] * 4

    def record(worker: int) -> None:
        while not done.is_set():
            recorder.record(f"model-{worker}", "1", 0.0)
            recorded[worker] += 1

    threads = [threading.Thread(target=record, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(200):  # failed writes, one after another, as fast as they come
        assert recorder.give_back(recorder.take(), keep=1000) == {}
    done.set()
    for thread in threads:
        thread.join(10)
    counted = sum(bucket.counts[0] for bucket in recorder.take().values())
    assert counted == sum(recorded)

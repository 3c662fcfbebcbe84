"""What pre-warming policies read back from the traffic history, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from modelserve.errors import Outcome
from modelserve.history.flusher import HistoryFlusher
from modelserve.history.query import ArrivalSeries, TrafficHistory
from modelserve.history.recorder import TrafficRecorder
from tests.clock import Clock

START = 5_556 * 180  # a multiple of every step the tests ask for


@pytest.fixture
def history(database_url: str) -> Iterator[TrafficHistory]:
    """A history holding: mlp (versions 1 and 2) in minutes 0, 1 and 5; iris in minute 3, one cold start."""
    clock = Clock(START)
    recorder = TrafficRecorder(60, clock)
    for minute, model, version, count in [
        (0, "mlp", "1", 3),
        (0, "mlp", "2", 2),
        (1, "mlp", "1", 1),
        (5, "mlp", "1", 4),
    ]:
        clock.now = START + minute * 60 + 1
        for _ in range(count):
            recorder.record(model, version, 0.002)
    clock.now = START + 3 * 60 + 5  # the 2 s request arrived 2 s before it was answered: minute 3 still
    recorder.record("iris", "1", 2.0, outcome=Outcome.NOT_READY)
    recorder.record("iris", "1", 0.0005)
    flusher = HistoryFlusher(recorder, database_url, interval_s=3600, retention_s=0)
    assert flusher.flush()
    yield TrafficHistory(flusher.engine)
    flusher.close()


def test_arrivals_per_step_sum_the_versions_and_fill_the_gaps(history: TrafficHistory) -> None:
    series = history.arrivals(START, START + 6 * 60, step=60)
    assert series == {
        "iris": ArrivalSeries("iris", START, 60, (0, 0, 0, 2, 0, 0)),
        "mlp": ArrivalSeries("mlp", START, 60, (5, 1, 0, 0, 0, 4)),
    }
    assert series["mlp"].total == 10
    assert series["mlp"].idle_times() == [0, 180]


def test_arrivals_at_a_coarser_step_and_for_chosen_models(history: TrafficHistory) -> None:
    series = history.arrivals(START, START + 6 * 60, step=180, models=["mlp"])
    assert series == {"mlp": ArrivalSeries("mlp", START, 180, (6, 4))}


def test_arrivals_outside_the_window_are_left_out(history: TrafficHistory) -> None:
    assert history.arrivals(START + 60, START + 2 * 60, step=60) == {"mlp": ArrivalSeries("mlp", START + 60, 60, (1,))}
    assert history.arrivals(START + 3600, START + 7200, step=60) == {}


def test_a_bad_window_is_refused(history: TrafficHistory) -> None:
    with pytest.raises(ValueError, match="since < until"):
        history.arrivals(START + 60, START, step=60)


def test_models_seen_in_a_window(history: TrafficHistory) -> None:
    assert history.models(START, START + 3600) == ["iris", "mlp"]
    assert history.models(START + 2 * 60, START + 4 * 60) == ["iris"]


def test_summary_counts_outcomes_and_estimates_latency(history: TrafficHistory) -> None:
    iris = history.summary("iris", START, START + 3600)
    assert iris.requests == 2
    assert iris.outcomes["not_ready"] == 1
    assert iris.outcomes["ok"] == 1
    assert iris.latency_sum_s == pytest.approx(2.0005)
    assert iris.latency_quantile(0.5) == 0.001
    assert iris.latency_quantile(0.99) == 3.0, "the upper bound of the step holding the p99"
    mlp = history.summary("mlp", START, START + 3600)
    assert mlp.requests == 10
    assert mlp.latency_quantile(0.99) == 0.003
    nothing = history.summary("absent", START, START + 3600)
    assert nothing.requests == 0
    assert math.isnan(nothing.latency_quantile(0.99))
    with pytest.raises(ValueError, match="outside"):
        mlp.latency_quantile(1.5)

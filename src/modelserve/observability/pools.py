"""The connection pools of the database engines this process opened, as the metrics read them.

``db.open_engine`` gives each engine's pool a ``PoolWatch``: the pool counts into it the checkouts that
found every connection busy and none left to open, and how long they waited; the rest (size, checked
out, overflow) is read from the pool itself when asked. A model server's ``Metrics`` sets its gauges
from ``readings`` at each refresh (summed over worker processes); any other process exports them by
registering a ``PoolCollector``. This module imports no database library, so the metrics can read it
in a server that has not opened a database yet.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class PoolReading:
    """One engine's pool now: its configured size, connections in use, connections open beyond the
    size, and the waits counted since it opened."""

    name: str
    size: int
    checked_out: int
    overflow: int
    waits: int
    wait_seconds: float


class PoolWatch:
    """The counters one engine's pool keeps, and how to read the pool it belongs to."""

    def __init__(self, name: str, gauges: Callable[[], tuple[int, int, int] | None]) -> None:
        self.name = name
        self._gauges = gauges  # size, checked out, overflow; None once the engine is gone
        self._lock = threading.Lock()
        self._waits = 0
        self._wait_seconds = 0.0

    def waited(self, seconds: float) -> None:
        """Count one checkout that had to wait ``seconds`` for a connection (or gave up after them)."""
        with self._lock:
            self._waits += 1
            self._wait_seconds += seconds

    def reading(self) -> PoolReading | None:
        """The pool now; None once its engine has been garbage-collected."""
        gauges = self._gauges()
        if gauges is None:
            return None
        with self._lock:
            return PoolReading(self.name, *gauges, self._waits, self._wait_seconds)


# Weak: an engine that is dropped takes its watch with it (the engine's pool class holds the watch).
_watches: weakref.WeakSet[PoolWatch] = weakref.WeakSet()


def watch(name: str, gauges: Callable[[], tuple[int, int, int] | None]) -> PoolWatch:
    """A new watch named ``name`` (the engine's purpose: ``history``), listed by ``readings`` while it lives."""
    created = PoolWatch(name, gauges)
    _watches.add(created)
    return created


def readings() -> dict[PoolWatch, PoolReading]:
    """Every live engine's pool, by its watch."""
    found = {}
    for each in list(_watches):
        if (reading := each.reading()) is not None:
            found[each] = reading
    return found


class PoolCollector(Collector):
    """The pools' figures under the model server's metric names, read at each scrape, for a process that
    is not a model server (the replication service) and so has no ``Metrics`` to refresh them."""

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "size": GaugeMetricFamily("model_serving_db_pool_size", "Connections the pool keeps.", labels=["pool"]),
            "checked_out": GaugeMetricFamily(
                "model_serving_db_pool_checked_out", "Connections of the pool in use now.", labels=["pool"]
            ),
            "overflow": GaugeMetricFamily(
                "model_serving_db_pool_overflow", "Connections open beyond the pool's size.", labels=["pool"]
            ),
            "waits": CounterMetricFamily(
                "model_serving_db_pool_waits", "Checkouts that found the pool exhausted and waited.", labels=["pool"]
            ),
            "wait_seconds": CounterMetricFamily(
                "model_serving_db_pool_wait_seconds", "Time checkouts waited for a connection.", labels=["pool"]
            ),
        }
        totals: dict[str, dict[str, float]] = {}
        for reading in readings().values():
            summed = totals.setdefault(reading.name, dict.fromkeys(families, 0.0))
            for field in families:
                summed[field] += getattr(reading, field)
        for name, summed in totals.items():
            for field, family in families.items():
                family.add_metric([name], summed[field])
        yield from families.values()

"""The connection pools of the database engines this process opened, as the metrics read them.

``db.open_engine`` gives each engine's pool a ``PoolWatch``: the pool counts into it the checkouts that
found every connection busy and none left to open, and how long they waited; the rest (size, checked
out, overflow) is read from the pool itself when asked. This module imports no database library, so
the metrics can read it in a server that has not opened a database yet.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass


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

"""A clock the test moves, and the timers that run on it, for the batcher's ``clock`` and ``call_later``."""

from __future__ import annotations

from collections.abc import Callable


class FakeTimer:
    """One pending call; cancelled, it never runs."""

    def __init__(self, due_ns: int, callback: Callable[[], object]) -> None:
        self.due_ns = due_ns
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTime:
    """Nanoseconds that pass only when the test calls ``advance``, which runs the timers that fall due."""

    def __init__(self, now_ns: int = 1_000_000_000) -> None:
        self.now_ns = now_ns
        self.scheduled = 0  # timers ever asked for: a new one means a new decision to wait
        self._timers: list[FakeTimer] = []

    def __call__(self) -> int:
        return self.now_ns

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(self.now_ns + round(delay_s * 1e9), callback)
        self._timers.append(timer)
        self.scheduled += 1
        return timer

    @property
    def pending(self) -> list[int]:
        """When the timers neither run nor cancelled are due, earliest first."""
        return sorted(t.due_ns for t in self._timers if not t.cancelled)

    def advance(self, ns: int) -> None:
        """Move the clock on by ``ns`` and run, in order, every timer due by then."""
        self.now_ns += ns
        due = sorted((t for t in self._timers if not t.cancelled and t.due_ns <= self.now_ns), key=lambda t: t.due_ns)
        self._timers = [t for t in self._timers if not t.cancelled and t.due_ns > self.now_ns]
        for timer in due:
            timer.callback()

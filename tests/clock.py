"""A clock for the code that takes one (the traffic history, the pre-warming policies), set by the test."""

from __future__ import annotations


class Clock:
    """Wall-clock time the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

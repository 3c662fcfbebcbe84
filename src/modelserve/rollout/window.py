"""A version's window: its counters read at the start of a check and the latencies held since.

The counters are the ones the manager keeps per version anyway (``ModelStats``); a window is their
difference between two readings. A version reloaded meanwhile has fresh statistics: its window then
starts from zero on them.
"""

from __future__ import annotations

from modelserve.models.breaker import BreakerState
from modelserve.models.records import ModelState, ModelVersion
from modelserve.models.stats import ModelStats
from modelserve.rollout.analysis import Window


class Watch:
    """Reads one model version's window; ``restart`` begins the next one."""

    def __init__(self) -> None:
        self._stats: ModelStats | None = None
        self._requests = 0
        self._failures = 0

    def restart(self, record: ModelVersion | None) -> None:
        """Start a window now: mark the counters and hold a fresh list for the latencies."""
        if record is None:
            self._stats = None
            return
        stats = self._stats = record.stats
        self._requests = stats.success.count + stats.fail.count
        self._failures = stats.model_failures
        stats.latencies = []

    def read(self, record: ModelVersion | None) -> Window:
        """What the version did since ``restart``; the window goes on (call ``restart`` to end it)."""
        if record is None:
            return Window()
        stats = record.stats
        if stats is not self._stats:  # reloaded since: its counters started again from zero
            self._stats, self._requests, self._failures = stats, 0, 0
            if stats.latencies is None:
                stats.latencies = []
        return Window(
            requests=stats.success.count + stats.fail.count - self._requests,
            failures=stats.model_failures - self._failures,
            latencies=list(stats.latencies or ()),
        )

    def stop(self) -> None:
        """Stop holding latencies: the version's requests cost nothing more."""
        if self._stats is not None:
            self._stats.latencies = None
            self._stats = None


def not_serving(record: ModelVersion | None) -> str | None:
    """Why the new version cannot serve its share (failed, or its circuit breaker open), or None."""
    if record is not None and record.state is ModelState.FAILED:
        return f"version {record.version} failed: {record.reason}"
    if record is not None and record.breaker is not None and record.breaker.state is BreakerState.OPEN:
        return f"version {record.version}'s circuit breaker is open: its runtime keeps failing"
    return None

"""Per-model timers a policy plans (load at, unload at), kept on one heap with lazy cancellation."""

from __future__ import annotations

import heapq
from enum import Enum


class Action(Enum):
    """What a timer does when it fires."""

    LOAD = "load"
    UNLOAD = "unload"


class Timers:
    """At most one pending timer per model and action: setting one again replaces it."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Action]] = []
        self._current: dict[tuple[str, Action], tuple[float, int]] = {}
        self._seq = 0

    def set(self, model: str, action: Action, at: float) -> None:
        """Fire ``action`` for ``model`` at ``at``, replacing any earlier plan for the same pair."""
        self._seq += 1
        self._current[(model, action)] = (at, self._seq)
        heapq.heappush(self._heap, (at, self._seq, model, action))

    def cancel(self, model: str, action: Action) -> None:
        """Forget the pending ``action`` of ``model``, if any."""
        self._current.pop((model, action), None)

    def at(self, model: str, action: Action) -> float | None:
        """When ``action`` is planned for ``model``, or None."""
        planned = self._current.get((model, action))
        return planned[0] if planned else None

    def due(self, now: float) -> list[tuple[str, Action]]:
        """Timers at or before ``now``, removed, in time order."""
        fired: list[tuple[str, Action]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, model, action = heapq.heappop(heap)
            if self._current.get((model, action), (0.0, -1))[1] == seq:
                del self._current[(model, action)]
                fired.append((model, action))
        return fired

    def pending(self) -> list[tuple[float, str, Action]]:
        """Every live timer as (at, model, action), soonest first: what a policy has planned."""
        return sorted((at, model, action) for (model, action), (at, _) in self._current.items())

    def next_at(self) -> float | None:
        """The earliest live timer, or None."""
        heap = self._heap
        while heap and self._current.get((heap[0][2], heap[0][3]), (0.0, -1))[1] != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

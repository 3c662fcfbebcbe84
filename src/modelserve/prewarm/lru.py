"""The baseline: load on demand, keep everything, evict the least recently used when room is needed.

This is what ModelMesh and Ray Serve's multiplexing do, and what a server with a memory budget and no
forecast does by default."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from modelserve.prewarm.policy import NOTHING, CacheView, Decision, Policy


class LRUPolicy(Policy):
    """Never pre-loads and never unloads on its own; evicts the model whose last request is oldest."""

    name = "lru"

    def __init__(self) -> None:
        self._recency: OrderedDict[str, float] = OrderedDict()  # least recently requested first

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        self._recency[model] = now
        self._recency.move_to_end(model)
        return NOTHING

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        allowed = set(candidates)
        ordered = [m for m in self._recency if m in allowed]
        # A pre-load nobody asked for has no request yet: it goes first.
        return [m for m in candidates if m not in self._recency] + ordered

"""What lru would have done with the same requests: the live policy's own counterfactual.

A policy's worth is the cold starts it avoids, and a live server cannot run lru beside it on the same
traffic. It can replay its requests, as they come, through an lru cache of the same budget with the sizes
and load times the server measured, as the simulator would: a request is cold when its model is not held,
or still loading (it then waits for that load). Cold starts avoided are the shadow's less the server's own.
The replay is a dictionary update per request, cheap beside the request itself.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable

from modelserve.prewarm.policy import ModelInfo


class LRUShadow:
    """An lru cache of ``budget_mb`` driven by arrivals alone; ``info`` gives a model's size and load time."""

    def __init__(self, budget_mb: Callable[[], float], info: Callable[[str], ModelInfo]) -> None:
        self._budget_mb, self._info = budget_mb, info
        self._held: OrderedDict[str, tuple[float, float]] = OrderedDict()  # model -> (MB, READY at), oldest first
        self._used_mb = 0.0
        self.cold_starts: Counter[str] = Counter()

    def arrived(self, model: str, at: float) -> bool:
        """Pass one request of ``model`` arriving ``at`` through the cache; True when lru would have been cold."""
        held = self._held.get(model)
        if held is not None:
            self._held.move_to_end(model)
            if held[1] <= at:
                return False
            self.cold_starts[model] += 1  # it arrived while lru was still loading the model
            return True
        self.cold_starts[model] += 1
        info = self._info(model)
        budget = self._budget_mb()
        while self._held and self._used_mb + info.size_mb > budget:
            _, (size_mb, _) = self._held.popitem(last=False)
            self._used_mb -= size_mb
        if self._used_mb + info.size_mb <= budget:
            self._held[model] = (info.size_mb, at + info.load_seconds)
            self._used_mb += info.size_mb
        return True

    def loaded(self, model: str, at: float) -> None:
        """``model`` was loaded for both: at start or by an operator, not by a request or a policy. lru holds
        it as the server does, if it fits without evicting anything."""
        info = self._info(model)
        if model not in self._held and self._used_mb + info.size_mb <= self._budget_mb():
            self._held[model] = (info.size_mb, at)
            self._used_mb += info.size_mb

    def holds(self, model: str) -> bool:
        """Whether lru would hold ``model`` now, loaded or loading."""
        return model in self._held

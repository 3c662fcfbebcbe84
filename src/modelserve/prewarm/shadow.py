"""What lru would have done with the same requests: the live policy's own counterfactual.

A policy's worth is the cold starts it avoids, and a live server cannot run lru beside it on the same
traffic. It can replay its requests, as they come, through an lru cache of the same budget with the sizes
and load times the server measured, as the simulator would: a request is cold when its model is not held,
or still loading (it then waits for that load). Cold starts avoided are the shadow's less the server's own.
The replay is a dictionary update per request, cheap beside the request itself.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable

from modelserve.prewarm.policy import ModelInfo


class LRUShadow:
    """An lru cache driven by arrivals alone: ``budget_of`` gives a device's budget, ``info`` a model's size,
    load time and device; a model makes room only among models of its own device, as the server's budgets do."""

    def __init__(self, budget_of: Callable[[str], float], info: Callable[[str], ModelInfo]) -> None:
        self._budget_of, self._info = budget_of, info
        self._held: OrderedDict[str, tuple[str, float, float]] = OrderedDict()  # model -> (device, MB, READY at)
        self._used: defaultdict[str, float] = defaultdict(float)  # MB held per device
        self.cold_starts: Counter[str] = Counter()

    def arrived(self, model: str, at: float) -> bool:
        """Pass one request of ``model`` arriving ``at`` through the cache; True when lru would have been cold."""
        held = self._held.get(model)
        if held is not None:
            self._held.move_to_end(model)
            if held[2] <= at:
                return False
            self.cold_starts[model] += 1  # it arrived while lru was still loading the model
            return True
        self.cold_starts[model] += 1
        info = self._info(model)
        budget = self._budget_of(info.device)
        if self._used[info.device] + info.size_mb > budget:
            for other in [m for m, (device, _, _) in self._held.items() if device == info.device]:
                self._used[info.device] -= self._held.pop(other)[1]
                if self._used[info.device] + info.size_mb <= budget:
                    break
        self._hold(model, info, at + info.load_seconds)
        return True

    def loaded(self, model: str, at: float) -> None:
        """``model`` was loaded for both: at start or by an operator, not by a request or a policy. lru holds
        it as the server does, if it fits without evicting anything."""
        if model not in self._held:
            self._hold(model, self._info(model), at)

    def holds(self, model: str) -> bool:
        """Whether lru would hold ``model`` now, loaded or loading."""
        return model in self._held

    def _hold(self, model: str, info: ModelInfo, ready_at: float) -> None:
        if self._used[info.device] + info.size_mb <= self._budget_of(info.device):
            self._held[model] = (info.device, info.size_mb, ready_at)
            self._used[info.device] += info.size_mb

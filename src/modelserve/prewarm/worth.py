"""What keeping a model is worth under a memory budget, for ``predictive``: the order in which loads on demand
evict, and whether a pre-load may displace the models it needs room from.

A model's worth is FaaSCache's Greedy-Dual value (Fuerst and Sharma, ASPLOS 2021) with the requests expected
soon in place of frequency: ``demand * (load_seconds + 0.1) / size_mb``, where ``demand`` is read from the
model's own history (``patterns``) and the windows a schedule or a leader announces.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence

from modelserve.prewarm.patterns import ACTIVATION_GAP, CLUMPED, ArrivalHistory
from modelserve.prewarm.policy import CacheView, evictable, mb_on, victims_for
from modelserve.prewarm.reasons import Draft, Why, displaced, text

HORIZON = 600.0  # "soon", for the reuse chance that ranks evictions for a load on demand
ADMIT_HORIZON = 120.0  # a pre-load is due within about this: it displaces models less likely to be used by then


class Worth:
    """Values models from the policy's histories and announced windows, which it reads and never changes."""

    def __init__(self, histories: Mapping[str, ArrivalHistory], expected: Mapping[str, tuple[float, float]]) -> None:
        self._history = histories
        self._expected = expected  # model -> (earliest, latest) of a request a schedule or a leader announces
        self._values: dict[str, float] = {}  # value of each model at _values_at: one event ranks many times
        self._values_at = -math.inf

    def forget(self, model: str) -> None:
        """``model`` was requested: a value computed before no longer holds."""
        self._values.pop(model, None)

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str], kept: Container[str]) -> list[str]:
        """``candidates`` least worth keeping first, models of ``kept`` (the resident set) last but for those
        in the middle of a burst."""
        if now != self._values_at:
            self._values.clear()
            self._values_at = now
        values = self._values
        for model in candidates:
            if model not in values:
                values[model] = self.value(model, now, view, HORIZON)
        # A model between two requests of a burst is evicted last, after the resident set: its next request
        # is seconds away, while a member is loaded again by the next choice of the set, minutes from now.
        history = self._history
        return sorted(
            candidates,
            key=lambda m: (
                (h := history.get(m)) is not None and now - h.last < ACTIVATION_GAP and h.burst_size() >= CLUMPED,
                m in kept,
                values[m],
            ),
        )

    def value(self, model: str, now: float, view: CacheView, horizon: float, *, certain: bool = False) -> float:
        """What keeping ``model`` is worth: the requests expected soon * what a load costs per MB.

        Requests expected soon: the chance of any within ``horizon`` times how many come once they do (the
        recent rate), or what the time of day expects, or one when a schedule or a leader announces it. For a
        model whose requests come in bursts, a burst in progress counts its requests, a burst to come one."""
        info = view.info(model)
        cost = (info.load_seconds + 0.1) / info.size_mb
        if certain:
            return cost
        window = self._expected.get(model)
        history = self._history.get(model)
        if history is None:
            demand = 0.5
        else:
            demand = history.chance_within(now, horizon)
            if history.burst_size() < CLUMPED:
                demand = max(demand * max(1.0, history.recent_rate() * horizon), history.expected_in(now, horizon))
            else:
                # Only a burst's first request can be cold: count bursts, not requests, and the time of
                # day's chance of any request in this quarter hour, not its mean count.
                if now - history.last < ACTIVATION_GAP:
                    demand *= max(1.0, history.recent_rate() * horizon)
                demand = max(demand, history.busy_chance(now))
        if window is not None and window[0] - horizon <= now <= window[1]:
            demand = max(demand, 1.0)
        return (demand + 0.01) * cost

    def admit(self, model: str, now: float, view: CacheView, draft: Draft, why: Why) -> None:
        """Add a pre-load of ``model`` to ``draft`` if the models it displaces are worth less together.

        Victims go cheapest per MB first, and their worth is summed (requests expected within
        ``ADMIT_HORIZON`` times load time): twenty small models likely to be used soon are not traded for
        one large one."""
        info = view.info(model)
        device = info.device  # room is made on the model's own device, by models of that device
        need = info.size_mb + mb_on(view, draft.load, device)
        freed = mb_on(view, draft.evict, device)
        if view.used_of(device) - freed + need <= view.budget_of(device):
            draft.add(model, text(why, now))
            return
        per_mb = {
            m: self.value(m, now, view, ADMIT_HORIZON)
            for m in evictable(view)
            if m not in draft.evict and view.info(m).device == device
        }
        victims = victims_for(view, need, sorted(per_mb, key=per_mb.__getitem__), freed, device)
        if victims is None:
            return
        worth = self.value(model, now, view, ADMIT_HORIZON, certain=True) * view.info(model).size_mb
        if sum(per_mb[m] * view.info(m).size_mb for m in victims) < worth:
            for victim in victims:
                draft.drop(victim, displaced(now, model, per_mb[victim] * view.info(victim).size_mb, worth))
            draft.add(model, text(why, now))

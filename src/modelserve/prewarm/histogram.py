"""``hybrid-histogram``: the policy of Shahrad et al., "Serverless in the Wild", USENIX ATC 2020.

Each model keeps a histogram of its idle times (here, the time between two requests, as requests take no
time) in 1-minute bins over 4 hours. When the histogram is representative, the 5th percentile (head) gives
the pre-warming window and the 99th (tail) the keep-alive window, with the paper's 10 % margins: after a
request the model is unloaded, loaded again ``0.9 * head`` later and kept ``1.1 * tail - 0.9 * head``; a head
of zero means it stays loaded for the keep-alive window instead. A histogram is not representative while it
holds fewer than ``MIN_SAMPLES`` idle times or its bin counts vary too little (coefficient of variation below
``MIN_CV``: idle times spread out, nothing to predict), nor when most idle times fall beyond its range (the
paper forecasts those with ARIMA; here, as for the other cases, the model falls back to a fixed keep-alive of
the histogram's range). The paper assumes unbounded memory; under a budget, loads on demand and pre-warms
evict the least recently used idle models, as a platform would.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelserve.prewarm.policy import (
    NOTHING,
    CacheView,
    Decision,
    Forecast,
    Pattern,
    Policy,
    Step,
    evictable,
    mb_on,
    victims_for,
)
from modelserve.prewarm.timers import Action, Timers

BIN_SECONDS = 60.0
BINS = 240  # 4 hours
HEAD_PERCENTILE = 5.0
TAIL_PERCENTILE = 99.0
MARGIN = 0.10
MIN_SAMPLES = 10
MIN_CV = 2.0
MAX_OUT_OF_BOUNDS = 0.5
FIXED_KEEP_ALIVE = BINS * BIN_SECONDS
EXACT_UP_TO = 100
REFRESH_GROWTH = 0.01


@dataclass(frozen=True, slots=True)
class Windows:
    """A model's pre-warming and keep-alive windows, in seconds."""

    prewarm: float
    keep_alive: float


FIXED = Windows(0.0, FIXED_KEEP_ALIVE)


class IdleTimeHistogram:
    """One model's idle times in minute bins; out-of-range times are only counted."""

    def __init__(self) -> None:
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.out_of_bounds = 0
        self.total = 0
        self._windows = FIXED
        self._computed_at = 0

    def add(self, idle_seconds: float) -> None:
        """Count one idle time."""
        index = int(idle_seconds // BIN_SECONDS)
        if index >= BINS:
            self.out_of_bounds += 1
        else:
            self.counts[index] += 1
        self.total += 1

    def windows(self) -> Windows:
        """The windows the histogram gives now.

        Recomputed after every new idle time up to ``EXACT_UP_TO`` of them, then each time their number
        grows by 1 %: the percentiles of a large histogram barely move, and recomputing on every request
        would cost a busy model more than the rest of the policy."""
        if self.total != self._computed_at and (
            self.total <= EXACT_UP_TO or self.total >= self._computed_at * (1 + REFRESH_GROWTH)
        ):
            self._windows = self._compute()
            self._computed_at = self.total
        return self._windows

    def _compute(self) -> Windows:
        inside = int(self.counts.sum())
        total = inside + self.out_of_bounds
        if total < MIN_SAMPLES or self.out_of_bounds > MAX_OUT_OF_BOUNDS * total:
            return FIXED
        mean = self.counts.mean()
        if float(self.counts.std()) < MIN_CV * float(mean):
            return FIXED
        cumulative = np.cumsum(self.counts)
        head_bin = int(np.searchsorted(cumulative, HEAD_PERCENTILE / 100 * inside, side="left"))
        tail_bin = int(np.searchsorted(cumulative, TAIL_PERCENTILE / 100 * inside, side="left"))
        head = head_bin * BIN_SECONDS  # the bin's lower edge: pre-warm no later than the head
        tail = (tail_bin + 1) * BIN_SECONDS  # the bin's upper edge: keep alive through the tail
        prewarm = head * (1 - MARGIN)
        return Windows(prewarm, tail * (1 + MARGIN) - prewarm)


class HybridHistogramPolicy(Policy):
    """Shahrad et al.'s hybrid histogram policy (see the module docstring), one histogram per model."""

    name = "hybrid-histogram"

    def __init__(self) -> None:
        self._histograms: dict[str, IdleTimeHistogram] = {}
        self._last: OrderedDict[str, float] = OrderedDict()  # least recently requested first
        self._unload_when_ready: set[str] = set()
        self._timers = Timers()

    def windows(self, model: str) -> Windows:
        """The windows ``model`` has now (the fixed keep-alive for a model never seen)."""
        histogram = self._histograms.get(model)
        return histogram.windows() if histogram else FIXED

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        last = self._last.get(model)
        histogram = self._histograms.setdefault(model, IdleTimeHistogram())
        if last is not None:
            histogram.add(now - last)
        self._last[model] = now
        self._last.move_to_end(model)
        windows = histogram.windows()
        self._timers.cancel(model, Action.LOAD)
        if windows.prewarm > 0:
            self._timers.set(model, Action.LOAD, now + windows.prewarm)
            self._timers.set(model, Action.UNLOAD, now + windows.prewarm + windows.keep_alive)
            if view.is_ready(model):
                return Decision(evict=(model,), wake_at=self._timers.next_at(), why={model: self._why_unload(model)})
            self._unload_when_ready.add(model)
        else:
            self._unload_when_ready.discard(model)
            self._timers.set(model, Action.UNLOAD, now + windows.keep_alive)
        return Decision(wake_at=self._timers.next_at())

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        if model in self._unload_when_ready:
            self._unload_when_ready.discard(model)
            return Decision(evict=(model,), wake_at=self._timers.next_at(), why={model: self._why_unload(model)})
        return NOTHING

    def tick(self, now: float, view: CacheView) -> Decision:
        load: list[str] = []
        evict: list[str] = []
        why: dict[str, str] = {}
        for model, action in self._timers.due(now):
            if action is Action.UNLOAD:
                if view.is_ready(model):
                    evict.append(model)
                    why[model] = self._why(model, Action.UNLOAD)
            elif not view.is_ready(model) and not view.is_loading(model):
                info = view.info(model)
                need = info.size_mb + mb_on(view, load, info.device)
                freed = mb_on(view, evict, info.device)
                order = [m for m in self.eviction_order(now, view, evictable(view)) if m not in evict]
                victims = victims_for(view, need, order, freed, info.device)
                if victims is not None:
                    evict.extend(victims)
                    why.update(
                        (victim, f"least recently used, displaced by the pre-load of {model}") for victim in victims
                    )
                    load.append(model)
                    why[model] = self._why(model, Action.LOAD)
        return Decision(tuple(load), tuple(evict), self._timers.next_at(), why)

    def planned(self, now: float, view: CacheView) -> list[Step]:
        return [
            Step("load" if action is Action.LOAD else "evict", model, at, self._why(model, action))
            for at, model, action in self._timers.pending()
        ]

    def forecast(self, model: str, now: float) -> Forecast:
        """The next request at the earliest at the histogram's head after the last one; the pattern stays
        ``none``: an idle-time histogram is not one of the patterns ``predictive`` reads."""
        last, windows = self._last.get(model), self.windows(model)
        at = None if last is None or windows is FIXED else last + windows.prewarm / (1 - MARGIN)
        return Forecast(model, Pattern.NONE, at)

    def _why(self, model: str, action: Action) -> str:
        windows = self.windows(model)
        if action is Action.LOAD:
            return (
                f"pre-warm window: {windows.prewarm:.0f} s since the last request (idle times' 5th percentile - 10 %)"
            )
        if windows is FIXED:
            return f"fixed keep-alive of {windows.keep_alive:.0f} s ran out (too few or too spread idle times)"
        keep = windows.prewarm + windows.keep_alive
        return f"keep-alive window ran out (idle times' 99th percentile + 10 %: {keep:.0f} s)"

    def _why_unload(self, model: str) -> str:
        return f"unloaded until its pre-warm window, {self.windows(model).prewarm:.0f} s after the request"

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        allowed = set(candidates)
        return [m for m in candidates if m not in self._last] + [m for m in self._last if m in allowed]

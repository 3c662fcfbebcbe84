"""Replaying a trace of arrivals against a policy and a memory budget, event by event.

Definitions (issue #7):

- a request is a **cold start** when its model is not READY when it arrives (unloaded, or still loading);
  its **added delay** is the time from its arrival until its model is READY;
- **loading** takes the model's ``load_seconds`` and holds its memory from the start;
- the **budget** is never exceeded: a load on demand evicts READY, idle models in the policy's eviction
  order, and waits for a load in progress to finish when nothing else can make room; a model on a GPU
  (``ModelInfo.device``) holds GPU memory, which a budget of its own limits, and makes room only by evicting
  other GPU models;
- a model counts as **idle memory** while loaded and READY (requests take no time in a trace);
- **memory figures** cover the window from the trace's first arrival to its last; host and GPU memory are
  counted apart.

Nothing is loaded at the first arrival. The replay jumps from event to event (arrivals, finished loads, the
policy's wake-ups on a heap), never stepping through seconds, so a week of traffic takes seconds.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelserve.prewarm.policy import CPU, DEVICES, GPU, Decision, ModelInfo, Policy, evictable
from modelserve.prewarm.traces import Trace

_LOADED, _WAKE = 0, 1  # at equal times a load finishes before a wake-up, and both before an arrival
TICK_S = 1.0  # as ``modelserve.prewarm.live``: the soonest a tick is followed by another it asks for


@dataclass(frozen=True, slots=True)
class Result:
    """One policy's figures over one trace."""

    policy: str
    requests: int
    cold_starts: int
    cold_start_rate: float
    memory_mb_seconds: float  # host memory
    idle_memory_mb_seconds: float
    loads: int
    evictions: int
    cold_start_delay_p50_s: float
    cold_start_delay_p99_s: float
    gpu_memory_mb_seconds: float = 0.0  # GPU memory, READY and loading models on a GPU
    gpu_idle_memory_mb_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values."""
        return asdict(self)


class _Cache:
    """The simulated holder of memory; the :class:`~modelserve.prewarm.policy.CacheView` policies read."""

    def __init__(self, catalogue: Mapping[str, ModelInfo], budgets: Mapping[str, float]) -> None:
        self.catalogue = catalogue
        self.budgets = budgets
        self.ready: set[str] = set()
        self.loading: set[str] = set()
        self.waiting: dict[str, list[float]] = {}  # model -> arrival times of requests waiting for it
        self.used = dict.fromkeys(DEVICES, 0.0)
        self.ready_on = dict.fromkeys(DEVICES, 0.0)

    @property
    def budget_mb(self) -> float:
        return self.budgets[CPU]

    @property
    def used_mb(self) -> float:
        return self.used[CPU]

    def budget_of(self, device: str) -> float:
        return self.budgets.get(device, 0.0)

    def used_of(self, device: str) -> float:
        return self.used[device]

    def info(self, model: str) -> ModelInfo:
        return self.catalogue[model]

    def resident(self) -> Collection[str]:
        return self.ready | self.loading

    def is_ready(self, model: str) -> bool:
        return model in self.ready

    def is_loading(self, model: str) -> bool:
        return model in self.loading

    def is_busy(self, model: str) -> bool:
        return model in self.waiting

    def fits(self, model: str) -> bool:
        info = self.catalogue[model]
        return self.used[info.device] + info.size_mb <= self.budget_of(info.device) + 1e-9

    def start_load(self, model: str) -> None:
        self.loading.add(model)
        info = self.catalogue[model]
        self.used[info.device] += info.size_mb

    def finish_load(self, model: str) -> None:
        self.loading.discard(model)
        self.ready.add(model)
        info = self.catalogue[model]
        self.ready_on[info.device] += info.size_mb

    def unload(self, model: str) -> None:
        self.ready.discard(model)
        info = self.catalogue[model]
        self.used[info.device] -= info.size_mb
        self.ready_on[info.device] -= info.size_mb


class Simulator:
    """One replay: a trace, a catalogue of models, a budget and a policy."""

    def __init__(
        self, catalogue: Mapping[str, ModelInfo], budget_mb: float, policy: Policy, gpu_budget_mb: float = 0.0
    ) -> None:
        if budget_mb <= 0:
            raise ValueError(f"the memory budget must be > 0 MB, got {budget_mb}")
        budgets = {CPU: budget_mb, GPU: gpu_budget_mb}
        for device, which in ((CPU, ""), (GPU, "GPU ")):
            too_big = [m.name for m in catalogue.values() if m.device == device and m.size_mb > budgets[device]]
            if too_big:
                raise ValueError(
                    f"models larger than the {budgets[device]} MB {which}budget can never load: {', '.join(too_big)}"
                )
        self.cache = _Cache(catalogue, budgets)
        self.policy = policy
        self._events: list[tuple[float, int, int, str]] = []
        self._seq = 0
        self._wakes: set[float] = set()
        self._pending: deque[str] = deque()  # loads on demand waiting for room
        self._clock = 0.0
        self._end = 0.0
        self._memory = dict.fromkeys(DEVICES, 0.0)
        self._idle = dict.fromkeys(DEVICES, 0.0)
        self._loads = 0
        self._evictions = 0
        self._delays: list[float] = []
        self._ticked_at: float | None = None  # the last tick, to tell its own overdue wake-up from others

    def run(self, trace: Trace) -> Result:
        """Replay every arrival of ``trace`` and report the figures of the Definitions."""
        if not trace.times:
            raise ValueError("the trace has no arrivals")
        unknown = sorted(set(trace.models) - set(self.cache.catalogue))
        if unknown:
            raise ValueError(f"the trace names models the models file lacks: {', '.join(unknown[:10])}")
        self._clock, self._end = trace.times[0], trace.times[-1]
        cold = 0
        for now, model in zip(trace.times, trace.models, strict=True):
            self._advance(now)
            if model not in self.cache.ready:
                cold += 1
                self._demand(model, now)
            self._apply(self.policy.on_arrival(model, now, self.cache), now)
        self._account(self._end)
        while self.cache.waiting and self._events:  # late loads finish, so every cold request has its delay
            self._step(heapq.heappop(self._events), wakes=False)
        requests = len(trace.times)
        delays = np.asarray(self._delays) if self._delays else np.zeros(1)
        return Result(
            policy=self.policy.name,
            requests=requests,
            cold_starts=cold,
            cold_start_rate=cold / requests,
            memory_mb_seconds=self._memory[CPU],
            idle_memory_mb_seconds=self._idle[CPU],
            loads=self._loads,
            evictions=self._evictions,
            cold_start_delay_p50_s=float(np.percentile(delays, 50)),
            cold_start_delay_p99_s=float(np.percentile(delays, 99)),
            gpu_memory_mb_seconds=self._memory[GPU],
            gpu_idle_memory_mb_seconds=self._idle[GPU],
        )

    def _advance(self, now: float) -> None:
        while self._events and self._events[0][0] <= now:
            self._step(heapq.heappop(self._events), wakes=True)

    def _step(self, event: tuple[float, int, int, str], *, wakes: bool) -> None:
        at, kind, _, model = event
        self._account(at)
        if kind == _LOADED:
            self.cache.finish_load(model)
            for arrived in self.cache.waiting.pop(model, ()):
                self._delays.append(at - arrived)
            self._start_pending(at)
            if wakes:
                self._apply(self.policy.on_loaded(model, at, self.cache), at)
        else:
            self._wakes.discard(at)
            if wakes:
                self._ticked_at = at
                self._apply(self.policy.tick(at, self.cache), at)

    def _account(self, at: float) -> None:
        """Integrate memory from the clock to ``at``, counting only the window up to the last arrival."""
        until = min(at, self._end)
        if until > self._clock:
            span = until - self._clock
            for device in DEVICES:
                self._memory[device] += self.cache.used[device] * span
                self._idle[device] += self.cache.ready_on[device] * span
            self._clock = until

    def _demand(self, model: str, now: float) -> None:
        waiting = self.cache.waiting.setdefault(model, [])
        waiting.append(now)
        if model in self.cache.loading or model in self._pending:
            return
        self._pending.append(model)
        self._start_pending(now)

    def _start_pending(self, now: float) -> None:
        """Start queued loads on demand, oldest first, evicting in the policy's order to make room."""
        while self._pending:
            model = self._pending[0]
            if model in self.cache.loading or model in self.cache.ready:  # a pre-load got there first
                self._pending.popleft()
                continue
            if not self.cache.fits(model):
                device = self.cache.catalogue[model].device  # only a model on the same device makes room
                candidates = [m for m in evictable(self.cache) if self.cache.catalogue[m].device == device]
                for victim in self.policy.eviction_order(now, self.cache, candidates):
                    if self.cache.fits(model):
                        break
                    if victim not in self.cache.ready or victim in self.cache.waiting:
                        continue
                    self._evict(victim, now)
                    self._apply(self.policy.on_unloaded(victim, now, self.cache), now)
                if not self.cache.fits(model):
                    return  # the rest waits for a load in progress to finish
            self._pending.popleft()
            self._load(model, now)

    def _load(self, model: str, now: float) -> None:
        self._account(now)
        self.cache.start_load(model)
        self._loads += 1
        self._push(now + self.cache.catalogue[model].load_seconds, _LOADED, model)

    def _evict(self, model: str, now: float) -> None:
        self._account(now)
        self.cache.unload(model)
        self._evictions += 1

    def _push(self, at: float, kind: int, model: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, kind, self._seq, model))

    def _apply(self, decision: Decision, now: float) -> None:
        if not decision:
            return
        cache = self.cache
        for model in decision.evict:
            if model in cache.ready and model not in cache.waiting:
                self._evict(model, now)
        for model in decision.load:
            if model not in cache.ready and model not in cache.loading and cache.fits(model):
                self._load(model, now)
        wake = decision.wake_at
        if wake is None:
            return
        if wake <= now:
            # Overdue: wake at once, as the live server's loop does, but a tick that asks again for a time
            # already past waits a tick, so a policy cannot hold the replay in one instant.
            wake = now + TICK_S if now == self._ticked_at else now
        if wake not in self._wakes:
            self._wakes.add(wake)
            self._push(wake, _WAKE, "")


def simulate(
    trace: Trace, catalogue: Mapping[str, ModelInfo], budget_mb: float, policy: Policy, gpu_budget_mb: float = 0.0
) -> Result:
    """Replay ``trace`` under ``policy`` with ``budget_mb`` of host memory (and ``gpu_budget_mb`` of GPU memory
    for models on a GPU); see the module's Definitions."""
    return Simulator(catalogue, budget_mb, policy, gpu_budget_mb).run(trace)

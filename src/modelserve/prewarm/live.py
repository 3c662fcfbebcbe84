"""A pre-warming policy driving the models of a running server (PREWARM_POLICY).

The same :class:`~modelserve.prewarm.policy.Policy` objects the simulator replays traces against run
here on the wall clock: the ModelManager tells this adapter of each request that reached its model,
of loads that finished and of evictions made for loads on demand, and asks it which idle models to
evict first; a timer ticks the policy. What the policy decides is carried out in the background:
evictions first (a model busy, pinned or not READY is skipped), then pre-loads that fit the budget now.

The view the policy reads is the manager's own: what a loaded model holds as measured at load, what an
unloaded one's next load will reserve, and for a model never loaded yet the mean of those known (a
policy needs some size to plan with; the first load corrects it). Load times are the median of the last
few measured, warmup included.

It also keeps what operators ask of it (``GET /v2/prewarm``, ``prewarm.report``): the last decisions
carried out, with their reasons and what became of them; per model, the cold starts the server had, the
cold starts an lru cache of the same budget would have had on the same requests (``shadow.LRUShadow``),
and the pre-loads no request used before the model went again.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from modelserve.errors import ModelserveError
from modelserve.history.query import TrafficHistory
from modelserve.models.budget import MemoryBudget
from modelserve.models.manager import ModelManager
from modelserve.models.memory import MIB
from modelserve.models.records import ModelState
from modelserve.prewarm.histogram import HybridHistogramPolicy
from modelserve.prewarm.lru import LRUPolicy
from modelserve.prewarm.policy import CPU, GPU, Decision, ModelInfo, Policy, Step
from modelserve.prewarm.predictive import PredictivePolicy
from modelserve.prewarm.shadow import LRUShadow

log = logging.getLogger("modelserve.prewarm")

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (LRUPolicy, HybridHistogramPolicy, PredictivePolicy)}
TICK_S = 1.0  # the longest a policy waits for its timer; sooner when a decision asks to be woken earlier
UNKNOWN_LOAD_S = 1.0  # the load time assumed for a model before any load of it was measured
ARRIVAL_RESOLUTION_S = 0.01  # requests of one model closer together than this reach the policy as one
HISTORY_DAYS = 7.0  # how far back a starting server's policy learns from: a week has every weekly pattern
ARRIVALS_PER_BUCKET = 4  # a bucket's requests replayed as this many arrivals at most
DAY_S = 86_400
EARLY_ARRIVALS = 100_000  # requests kept for the policy while it learns from the history; later ones are counted only
# Load times a model's is the median of: one slow load on a busy host (50 % off the usual) would otherwise
# reorder what the policy evicts first, which ranks by load time per MB.
LOAD_TIMES = 5
REMEMBERED_STEPS = 100  # decisions carried out that GET /v2/prewarm shows, the latest last


class PrewarmObserver(Protocol):
    """Where the pre-warmer's counts go: the server's metrics."""

    def observe_prewarm(self, model: str) -> None: ...

    def observe_unused_prewarm(self, model: str) -> None: ...

    def observe_counterfactual(self, model: str, lru_cold: bool, avoided: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Done:
    """A step of a decision as carried out: done, or skipped and why."""

    step: Step
    outcome: str  # "done", or why not ("busy", "does not fit: ...", the load's error)


class LivePrewarmer:
    """Runs ``policy`` against ``manager``'s models within ``budget`` (the host memory budget)."""

    def __init__(
        self,
        policy: Policy,
        manager: ModelManager,
        budget: MemoryBudget,
        observer: PrewarmObserver | None = None,
        clock: Callable[[], float] = time.time,
        gpu_budget: MemoryBudget | None = None,
    ) -> None:
        self.policy, self._manager, self._budget, self._gpu_budget = policy, manager, budget, gpu_budget
        self._observer = observer
        self._clock = clock  # wall-clock seconds: policies read the time of day from it
        self.steps: deque[Done] = deque(maxlen=REMEMBERED_STEPS)
        self.shadow = LRUShadow(self.budget_of, self.info)
        self.cold_starts: Counter[str] = Counter()  # requests that found their model not READY, since start
        self.unused_loads: Counter[str] = Counter()  # pre-loads evicted before any request used them
        self._unused: set[str] = set()  # pre-loaded models no request has used yet
        self._ordered: set[str] = set()  # models loading on the policy's order or for a request, not by an operator
        self._wake_at: float | None = None
        self._woken = asyncio.Event()
        self._work: set[asyncio.Task[None]] = set()
        self._sizes: dict[str, float] = {}  # MiB, as last known: held now, or reserved for the next load
        self._gpu_sizes: dict[str, float] = {}  # likewise, of the GPU memory of models on a GPU
        self._load_s: dict[str, float] = {}  # the median of each model's last LOAD_TIMES loads
        self._load_times: dict[str, deque[float]] = {}
        self._told: dict[str, float] = {}  # when each model's last arrival was passed on
        # Until ``run`` starts, the policy may be learning from the history in a thread: requests are counted
        # and kept here, told to it once it runs, and loads on demand evict least recently used first.
        self._early: list[tuple[str, float]] | None = []
        manager.advisor = self

    @property
    def learning(self) -> bool:
        """True until ``run`` starts: the policy may be learning from the history in a thread, and is not
        read meanwhile."""
        return self._early is not None

    # -- what the manager tells it -------------------------------------------------------------------

    def arrived(self, model: str, at: float) -> None:
        """A request for ``model`` that arrived ``at`` was answered: the policy sees it as the simulator's
        requests, which take no time, so that it may unload the model at once.

        Requests within ARRIVAL_RESOLUTION_S of the one last told are folded into it: ``predictive``
        takes some 10 µs per arrival, a tenth of what a small model's request costs the server, and a
        model asked for a hundred times a second is not one a policy would unload anyway."""
        self._unused.discard(model)
        if self.shadow.arrived(model, at) and self._observer is not None:
            self._observer.observe_counterfactual(model, True, self.avoided(model))
        if at - self._told.get(model, -ARRIVAL_RESOLUTION_S) < ARRIVAL_RESOLUTION_S:
            return
        self._told[model] = at
        if self._early is not None:
            if len(self._early) < EARLY_ARRIVALS:
                self._early.append((model, at))
            return
        self._follow(self.policy.on_arrival(model, at, self))

    def cold_start(self, model: str) -> None:
        """A request found ``model`` not READY and waits for it: the cold start the policy did not avoid."""
        self.cold_starts[model] += 1
        self._ordered.add(model)
        if self._observer is not None:
            self._observer.observe_counterfactual(model, False, self.avoided(model))

    def avoided(self, model: str) -> int:
        """Cold starts of ``model`` lru would have had beyond the server's own (negative: more than lru)."""
        return self.shadow.cold_starts[model] - self.cold_starts[model]

    def loaded(self, model: str) -> None:
        """``model`` turned READY, on demand or pre-loaded."""
        records = [r for r in self._manager.records(model) if r.state is ModelState.READY]
        if records:
            times = self._load_times.setdefault(model, deque(maxlen=LOAD_TIMES))
            times.append(max(r.load_seconds for r in records))
            self._load_s[model] = statistics.median(times)
        if model in self._ordered:
            self._ordered.discard(model)
        else:  # loaded at start or by an operator: lru would hold it too
            self.shadow.loaded(model, self._clock())
        if self._early is None:
            self._follow(self.policy.on_loaded(model, self._clock(), self))

    def evicted(self, model: str) -> None:
        """``model`` was evicted to make room for a load on demand."""
        self._gone(model)
        if self._early is None:
            self._follow(self.policy.on_unloaded(model, self._clock(), self))

    def eviction_order(self, candidates: list[str]) -> list[str]:
        """Idle models, first to evict first, as the policy ranks them (none before it runs: the manager then
        evicts least recently used first)."""
        return [] if self._early is not None else self.policy.eviction_order(self._clock(), self, candidates)

    # -- the view the policy reads -------------------------------------------------------------------

    @property
    def budget_mb(self) -> float:
        return self._budget.limit_bytes / MIB

    @property
    def used_mb(self) -> float:
        return self.used_of(CPU)

    def budget_of(self, device: str) -> float:
        if device == GPU:
            return 0.0 if self._gpu_budget is None else self._gpu_budget.limit_bytes / MIB
        return self.budget_mb

    def used_of(self, device: str) -> float:
        return sum((info.size_mb for model in self.resident() if (info := self.info(model)).device == device), 0.0)

    def info(self, model: str) -> ModelInfo:
        """A model on a GPU is one that held GPU memory when last loaded under GPU_MEMORY_FRACTION: it is
        planned by that memory. Any other is planned by its host memory."""
        records = [r for r in self._manager.records(model) if r.runtime is not None]
        gpu = self._gpu_budget
        on_gpu = sum(r.memory.get("GPU", 0) for r in records) or (gpu.learned(model) if gpu is not None else None)
        if on_gpu:
            self._gpu_sizes[model] = on_gpu / MIB
            return ModelInfo(model, max(on_gpu / MIB, 1e-3), self._load_s.get(model, UNKNOWN_LOAD_S), GPU)
        held = sum(r.memory.get("CPU", 0) for r in records)
        size = held or self._budget.learned(model)
        if size:
            self._sizes[model] = size / MIB
        known = self._sizes.values()
        size_mb = self._sizes.get(model) or (sum(known) / len(known) if known else 1.0)
        return ModelInfo(model, max(size_mb, 1e-3), self._load_s.get(model, UNKNOWN_LOAD_S))

    def resident(self) -> Collection[str]:
        return {r.name for r in self._manager.holding()}

    def is_ready(self, model: str) -> bool:
        return any(r.state is ModelState.READY for r in self._manager.records(model))

    def is_loading(self, model: str) -> bool:
        return any(r.state is ModelState.LOADING for r in self._manager.records(model))

    def is_busy(self, model: str) -> bool:
        return any(r.in_flight for r in self._manager.records(model))

    # -- learning from the traffic history -----------------------------------------------------------

    def learn_from(self, history: TrafficHistory, step: int, until: float, days: float = HISTORY_DAYS) -> int:
        """Replay the traffic history of the ``days`` before ``until`` into the policy, so that a server
        that restarts pre-warms from what it saw before instead of from nothing; returns the arrivals told.

        ``step`` is the history's bucket width (HISTORY_BUCKET_SEC). Each bucket's requests become at
        most ARRIVALS_PER_BUCKET arrivals spread evenly over it, in time order across models, since
        followers are learnt from the interleaving. What the policy decides meanwhile is dropped: it is
        about the past. It reads the database and takes a while: run it in a thread before ``run``, with
        the view of a server holding nothing.
        """
        past = _PastView(self.budget_mb)
        events: list[tuple[float, str]] = []
        for model, series in history.arrivals(until - days * DAY_S, until, step).items():
            for index, count in enumerate(series.counts):
                told = min(count, ARRIVALS_PER_BUCKET)
                start = series.start + index * series.step
                events.extend((start + (k + 0.5) * series.step / told, model) for k in range(told))
        events.sort()
        for at, model in events:
            self.policy.on_arrival(model, at, past)
        return len(events)

    # -- carrying decisions out ----------------------------------------------------------------------

    async def run(self) -> None:
        """Tell the policy of the manager's events from now on, and tick it until cancelled: every
        TICK_S, or sooner when a decision asks to be woken."""
        early, self._early = self._early or [], None
        for model, at in early:
            self._follow(self.policy.on_arrival(model, at, self))
        while True:
            delay = TICK_S if self._wake_at is None else min(TICK_S, max(0.0, self._wake_at - self._clock()))
            self._woken.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._woken.wait()
            except TimeoutError:
                pass
            now = self._clock()
            if self._wake_at is not None and self._wake_at <= now:
                self._wake_at = None
            self._follow(self.policy.tick(now, self))

    def _follow(self, decision: Decision) -> None:
        if decision.wake_at is not None and (self._wake_at is None or decision.wake_at < self._wake_at):
            self._wake_at = decision.wake_at
            self._woken.set()
        if decision.load or decision.evict:
            task = asyncio.get_running_loop().create_task(self._carry_out(decision))
            self._work.add(task)
            task.add_done_callback(self._work.discard)

    async def _carry_out(self, decision: Decision) -> None:
        log.debug("pre-warming decision: load %s, evict %s", decision.load, decision.evict)
        for model in decision.evict:
            step = Step("evict", model, self._clock(), decision.reason(model))
            evicted = await self._manager.evict(model, "the pre-warming policy expects no request for it soon")
            self.steps.append(Done(step, "done" if evicted else "skipped: busy, pinned or not loaded"))
            if evicted:
                self._gone(model)
        for model in decision.load:
            step = Step("load", model, self._clock(), decision.reason(model))
            if model in self.resident():
                self.steps.append(Done(step, "skipped: already loaded"))
                continue
            info = self.info(model)
            if (need := self.used_of(info.device) + info.size_mb) > (budget := self.budget_of(info.device)):
                log.debug("pre-load of %s skipped: needs %.1f of %.1f MiB (%s)", model, need, budget, info.device)
                self.steps.append(
                    Done(step, f"skipped: needs {need:.0f} MiB of the {info.device} budget's {budget:.0f}")
                )
                continue
            self._unused.add(model)  # before the load: a request that waits for it uses it
            self._ordered.add(model)
            try:
                await self._manager.prewarm(model)
            except ModelserveError as exc:
                log.info("pre-loading model %s failed: %s", model, exc.message)
                self.steps.append(Done(step, f"failed: {exc.message}"))
                self._unused.discard(model)
                self._ordered.discard(model)
                continue
            self.steps.append(Done(step, "done"))
            if self._observer is not None:
                self._observer.observe_prewarm(model)

    def _gone(self, model: str) -> None:
        """``model`` was unloaded: a pre-load of it that no request used was memory spent for nothing."""
        if model in self._unused:
            self._unused.discard(model)
            self.unused_loads[model] += 1
            if self._observer is not None:
                self._observer.observe_unused_prewarm(model)


class _PastView:
    """What the policy sees while it learns from the history: the budget, and nothing loaded."""

    def __init__(self, budget_mb: float) -> None:
        self.budget_mb, self.used_mb = budget_mb, 0.0

    def budget_of(self, device: str) -> float:
        return self.budget_mb if device == CPU else 0.0

    def used_of(self, device: str) -> float:
        return 0.0

    def info(self, model: str) -> ModelInfo:
        return ModelInfo(model, 1.0, UNKNOWN_LOAD_S)

    def resident(self) -> Collection[str]:
        return ()

    def is_ready(self, model: str) -> bool:
        return False

    def is_loading(self, model: str) -> bool:
        return False

    def is_busy(self, model: str) -> bool:
        return False

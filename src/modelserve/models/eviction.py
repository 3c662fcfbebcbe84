"""Making room for a load: which idle models to evict, under the memory budgets, the soft limit, or a
pre-warming policy's order, and the eviction itself.

Apart from the loader because it is the one place that decides to unload a model nobody asked to
unload. It owns the gate loads queue behind whenever eviction is possible, so two loads never evict
for each other, and a model is never evicted under its requests (``Holder.busy``). It reads the
records, and unloads through the function it is given: the loader's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace

from modelserve.errors import InsufficientMemory
from modelserve.models.budget import Holder, MemoryBudget, Order, least_recently_used
from modelserve.models.memory import MemoryWatchdog, Pressure
from modelserve.models.records import LoadAdvisor, ManagerObserver, ModelRecords, ModelState
from modelserve.repository.layout import ModelSource

log = logging.getLogger("modelserve.models")

Unload = Callable[[str, str], Awaitable[None]]  # (model, reason): unload every version of a model


class Eviction:
    """Decides which idle models go to make room, and unloads them with ``unload``."""

    def __init__(
        self,
        records: ModelRecords,
        unload: Unload,
        *,
        budgets: Sequence[MemoryBudget],
        watchdog: MemoryWatchdog,
        may_evict: bool,
        wait_s: float,
        observer: ManagerObserver | None = None,
    ) -> None:
        self._records = records
        self._unload = unload
        self.budgets = tuple(budgets)
        self.watchdog = watchdog
        self._may_evict = may_evict
        self._wait_s = wait_s  # how long a load waits for busy models to go idle (MODEL_LOAD_TIMEOUT)
        self._observer = observer
        self.advisor: LoadAdvisor | None = None  # a pre-warming policy's order, when one runs
        # A footprint measured while another model loads would be partly that model's: loads queue here.
        self._gate = asyncio.Lock() if (self.budgets or may_evict) else None
        self._idle = asyncio.Event()  # set when a model's last request leaves: a load waiting for room looks again

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the gate (when there is one): loads and evictions inside it run one at a time."""
        if self._gate is None:
            yield
            return
        async with self._gate:
            yield

    def model_idle(self) -> None:
        """A model's last request has left: a load waiting for room may find it now."""
        self._idle.set()

    async def shed(self) -> None:
        """Evict idle models, least recently used first, while RSS is above MEMORY_SOFT_LIMIT_MB."""
        if self._may_evict and self._gate is not None:
            async with self._gate:
                await self._relieve_pressure(None)

    async def make_room(self, source: ModelSource, versions: list[int], startup: bool) -> None:
        """Refuse a load that would not fit, or evict idle models so that it does, before it starts.
        The caller holds the gate (``exclusive``)."""
        name = source.name
        if not startup:
            await self._relieve_pressure(name)
            self.watchdog.check_load(name)
        deadline = time.monotonic() + self._wait_s
        while True:
            holders = self._holders(name)
            try:
                chosen = self._plan(source, versions, holders)
                break
            except InsufficientMemory:
                # Models busy now will be idle once their requests are answered: wait for that (up to
                # MODEL_LOAD_TIMEOUT) rather than refuse, unless not even their room would do.
                left = deadline - time.monotonic()
                if not self._may_evict or left <= 0:
                    raise
                self._plan(source, versions, [h if h.name == name else replace(h, busy=False) for h in holders])
                self._idle.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._idle.wait()
        for holder in chosen:
            await self._evict_model(holder.name, "budget", f"to make room for model '{name}'")

    def _plan(self, source: ModelSource, versions: list[int], holders: list[Holder]) -> list[Holder]:
        """The models to evict so that ``versions`` fit every budget; InsufficientMemory if none would do."""
        chosen: list[Holder] = []
        for budget in self.budgets:
            need = sum(budget.estimate(source.name, v, source.files[v]) for v in versions)
            evict = budget.room_for(source.name, need, holders, may_evict=self._may_evict, order=self._order())
            chosen += evict
            holders = [h for h in holders if h not in evict]
        return chosen

    async def settle(self, name: str) -> None:
        """After a load measured larger than it reserved, evict idle models until the budgets hold again.
        The caller holds the gate."""
        for budget in self.budgets:
            holders = self._holders(name)
            if budget.over_by(holders) <= 0:
                continue
            try:
                evict = budget.room_for(name, 0, holders, may_evict=self._may_evict, order=self._order())
            except InsufficientMemory as exc:
                log.warning("loaded models exceed %s: %s", budget.setting, exc.message)
                continue
            for holder in evict:
                await self._evict_model(holder.name, "budget", f"model '{name}' holds more than it was estimated to")

    async def _relieve_pressure(self, loading: str | None) -> None:
        if not self._may_evict:
            return
        while self.watchdog.pressure() >= Pressure.SOFT:
            idle = [h for h in self._holders(loading) if h.evictable]
            if not idle:
                return
            victim = (self._order() or least_recently_used)(idle)[0]
            await self._evict_model(victim.name, "memory_pressure", "process RSS above MEMORY_SOFT_LIMIT_MB")

    def _holders(self, loading: str | None) -> list[Holder]:
        """Every model holding memory; the one being loaded is never a candidate for eviction."""
        holders = []
        for name, records in self._records.loaded().items():
            held: dict[str, int] = {}
            for record in records:
                for kind, size in record.memory.items():
                    held[kind] = held.get(kind, 0) + size
            busy = name == loading or any(r.in_flight or r.state is not ModelState.READY for r in records)
            last_used = max(r.last_used_ns for r in records)
            holders.append(Holder(name, held, last_used, any(r.pinned for r in records), busy))
        return holders

    def _order(self) -> Order | None:
        advisor = self.advisor
        if advisor is None:
            return None
        return lambda holders: _reordered(holders, advisor.eviction_order([h.name for h in holders]))

    async def evict(self, name: str, why: str) -> bool:
        """Evict ``name`` at a pre-warming policy's request, if it is loaded, idle and not pinned."""
        if self._gate is None:
            return False
        async with self._gate:
            if not any(h.name == name and h.evictable for h in self._holders(None)):
                return False
            await self._evict_model(name, "prewarm", why)
            return True

    async def _evict_model(self, name: str, reason: str, why: str) -> None:
        log.info("evicting model %s (%s): %s", name, reason, why)
        await self._unload(name, f"evicted {why}")
        if self._observer is not None:
            self._observer.observe_eviction(name, reason)
        if self.advisor is not None and reason != "prewarm":
            self.advisor.evicted(name)


def _reordered(holders: list[Holder], names: list[str]) -> list[Holder]:
    """``holders`` in the order of ``names``; any the advisor left out go last, least recently used first."""
    by_name = {h.name: h for h in holders}
    ranked = [by_name.pop(n) for n in names if n in by_name]
    return ranked + least_recently_used(list(by_name.values()))

"""``predictive``: load a model before its traffic arrives, unload it while it is not needed, and under
memory pressure evict what is least worth keeping. docs/PREWARM.md explains the design and its sources.

After each request the policy plans the model's next need from the first signal that applies:

1. **fixed rate** (a schedule, SPES's "regular" class): the next request is due one period later, give or
   take the jitter seen; unload now and load again ``load_seconds + jitter + SAFETY`` before it is due
   (Shahrad et al.'s pre-warm window, but sized by the load time), or keep it if the gap is too short;
2. **bursts on a schedule**: keep the model through the burst, then unload, and pre-load before the next
   burst is due;
3. otherwise a **keep-alive** from the model's own inter-arrival times (their 90th percentile, and never
   shorter than the gaps within its bursts), as hybrid-histogram does with its tail, a little shorter: memory
   the policy does not hold idle is memory its pre-loads can use. While memory is roomy (under ``ROOMY`` of
   the budget) the keep-alive stretches to the 99th percentile.

Two more signals pre-load models that have no request yet: **co-occurrence** (when a model's burst starts,
its followers are loaded in time for their usual lag, IceBreaker/SPES's "correlated" functions) and the
**time of day and week** (before each quarter hour, models that usually get requests in it are loaded).
Models whose requests no signal foresees are kept by their rate instead: every ``RESIDENT_EVERY`` seconds
the **resident set** (``residency``) is chosen, the models with the most bursts per MB at this time of day,
and loaded; loads on demand evict its members last. Models whose bursts come hours or days apart are
**sparse**: instead of a keep-alive each, the memory those keep-alives would hold goes to the densest of
them (``residency.members``), and a model of a request or two a day is pre-loaded around the hour of its
last one.
Under a budget, loads on demand evict the lowest ``P(request within HORIZON) * load_seconds / size_mb``
first (FaaSCache's Greedy-Dual value with the reuse chance in place of frequency), and a pre-load evicts
only models worth less than itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelserve.prewarm import residency
from modelserve.prewarm.cooccurrence import WINDOW, FollowerTable
from modelserve.prewarm.patterns import ACTIVATION_GAP, SLOT_SECONDS, ArrivalHistory
from modelserve.prewarm.policy import NOTHING, CacheView, Decision, Policy, evictable, victims_for
from modelserve.prewarm.timers import Action, Timers

SAFETY = 1.0  # seconds a pre-load finishes ahead of the earliest expected request
MIN_GAP = 2.0  # unloading between two scheduled requests must free at least this long
MAX_SKIPPED = 2  # ticks of a schedule that may pass without a request before it is no longer expected
HORIZON = 600.0  # "soon", for the reuse chance that ranks evictions for a load on demand
ADMIT_HORIZON = 120.0  # a pre-load is due within about this: it displaces models less likely to be used by then
KEEP_QUANTILE = 0.9
DEFAULT_KEEP_ALIVE = 600.0  # before a model has four inter-arrival times
MAX_KEEP_ALIVE = 4 * 3600.0
ROOMY = 0.9  # below this share of the budget in use, keep-alives stretch to the 99th percentile
CLUMPED = 4.0  # requests per burst from which a model's requests count as bursts, not single arrivals
GAP_QUANTILE = 0.75  # a clumped model is kept through gaps between bursts up to this quantile of them
ANNOUNCED = 0.75  # a follower whose leaders announce this share of its bursts is unloaded after each burst
ACTIVE_SLOT = 1.0  # requests expected in a quarter hour for the time of day to pre-load a model
SLOT_LEAD = 120.0  # time-of-day pre-loads start this long before their quarter hour
RESIDENT_EVERY = 120.0  # seconds between two choices of the resident set
RESIDENT_SHARE = 0.8  # share of the budget the resident set may fill; the rest is for loads on demand
BURST_PEAK = 2.0  # the resident set leaves this many times the memory bursts hold on average
ANNOUNCED_EVERY = 600.0  # seconds for which whether a model's leaders announce it is taken as known
SPARSE_DAILY = 2.0  # requests a day up to which a model's time of day is read across neighbouring slots


class PredictivePolicy(Policy):
    """Periodicity, co-occurrence, time of day and week, and size and load time (see the module docstring)."""

    name = "predictive"

    def __init__(self) -> None:
        self._history: dict[str, ArrivalHistory] = {}
        self._followers = FollowerTable()
        self._timers = Timers()
        # The window in which a schedule or a leader announces the next request: (earliest, latest).
        self._expected: dict[str, tuple[float, float]] = {}
        self._unload_when_ready: set[str] = set()
        self._next_slot: float | None = None  # the next quarter hour the time of day prepares for
        self._values: dict[str, float] = {}  # _value of each model at _values_at: one event ranks many times
        self._values_at = -math.inf
        self._resident: dict[str, float] = {}  # the resident set, with each model's density
        self._resident_at: float | None = None  # when the resident set is chosen next
        self._announced_cache: dict[str, bool] = {}  # _announced, until _announced_until
        self._announced_until = -math.inf
        self._origin = math.inf  # the first request seen: sparse rates count from there
        self._sparse: set[str] = set()  # models rated sparse at the last choice of the resident set

    def expected(self, model: str) -> float | None:
        """When the next request of ``model`` is expected at the earliest, if a schedule or a leader says so."""
        window = self._expected.get(model)
        return window[0] if window else None

    def resident(self) -> list[str]:
        """The resident set as last chosen, densest first: models kept loaded whether or not one is due."""
        return sorted(self._resident, key=self._resident.__getitem__, reverse=True)

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        self._origin = min(self._origin, now)
        history = self._history.get(model)
        if history is None:
            history = self._history[model] = ArrivalHistory(now)
            activation = True
        else:
            activation = history.add(now)
        self._followers.observe(model, now, activation=activation)
        self._expected.pop(model, None)
        self._values.pop(model, None)
        load: list[str] = []
        evict: list[str] = []
        if self._plan(model, history, now, view):
            if view.is_ready(model):
                evict.append(model)
            else:
                self._unload_when_ready.add(model)
        if activation:
            self._prepare_followers(model, now, view, load, evict)
        if self._next_slot is None:
            self._next_slot = (math.floor(now / SLOT_SECONDS) + 1) * SLOT_SECONDS
            self._resident_at = now + RESIDENT_EVERY
        return Decision(tuple(load), tuple(evict), self._wake_at())

    def _plan(self, model: str, history: ArrivalHistory, now: float, view: CacheView) -> bool:
        """Set ``model``'s timers after a request; True when it should be unloaded now."""
        lead = view.info(model).load_seconds + SAFETY
        timers = self._timers
        self._unload_when_ready.discard(model)
        schedule = history.schedule
        if schedule is not None:
            due = now + schedule.period
            self._expected[model] = (due - schedule.jitter, due + schedule.jitter + SAFETY)
            timers.set(model, Action.UNLOAD, due + schedule.jitter + SAFETY)
            preload = due - schedule.jitter - lead
            if preload - now > MIN_GAP:
                timers.set(model, Action.LOAD, preload)
                return True
            timers.cancel(model, Action.LOAD)
            return False
        timers.cancel(model, Action.LOAD)
        bursts = history.burst_schedule
        if bursts is not None:
            due = history.last_activation + bursts.period
            self._expected[model] = (due - bursts.jitter, due + bursts.jitter + SAFETY)
            burst_end = now + min(1.5 * history.burst_keep_alive() + SAFETY, ACTIVATION_GAP)
            preload = due - bursts.jitter - lead
            if preload - burst_end > MIN_GAP:
                timers.set(model, Action.UNLOAD, burst_end)
                timers.set(model, Action.LOAD, preload)
            else:
                timers.set(model, Action.UNLOAD, due + bursts.jitter + SAFETY)
            return False
        keep = history.interval_quantile(KEEP_QUANTILE)
        keep = DEFAULT_KEEP_ALIVE if keep is None else keep
        keep = max(keep, 1.5 * history.burst_keep_alive())  # never unload in the middle of a burst
        if history.burst_size() >= CLUMPED:
            # Its inter-arrival times are mostly the gaps inside bursts: what decides a cold start is
            # whether the model outlives the gap before the next burst.
            keep = max(keep, history.activation_gap_quantile(GAP_QUANTILE) or 0.0)
        if (model in self._sparse and model not in self._resident) or self._announced(model):
            # Its keep-alive's memory went to the densest sparse models (``residency.members``), or its
            # leader's next burst will load it in time: either way, holding it until then is idle memory.
            keep = 1.5 * history.burst_keep_alive()
        timers.set(model, Action.UNLOAD, now + min(keep, MAX_KEEP_ALIVE) + SAFETY)
        return False

    def _prepare_followers(self, leader: str, now: float, view: CacheView, load: list[str], evict: list[str]) -> None:
        for follower in self._followers.followers(leader, self._background_chance):
            model = follower.model
            if view.is_ready(model) or view.is_loading(model) or model in load:
                continue
            due = now + follower.lag_min
            self._expected[model] = (due, now + follower.lag_max + SAFETY)
            self._keep_until(model, now + follower.lag_max + SAFETY)
            start = due - view.info(model).load_seconds - SAFETY
            if start > now:
                self._timers.set(model, Action.LOAD, start)
            else:
                self._admit(model, now, view, load, evict)

    def _background_chance(self, model: str) -> float:
        history = self._history.get(model)
        return 0.0 if history is None else 1.0 - math.exp(-history.rate() * WINDOW)

    def _keep_until(self, model: str, until: float) -> None:
        planned = self._timers.at(model, Action.UNLOAD)
        if planned is None or planned < until:
            self._timers.set(model, Action.UNLOAD, until)

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        if model in self._unload_when_ready:
            self._unload_when_ready.discard(model)
            return Decision(evict=(model,), wake_at=self._wake_at())
        return NOTHING

    def on_unloaded(self, model: str, now: float, view: CacheView) -> Decision:
        self._timers.cancel(model, Action.UNLOAD)
        return NOTHING

    def tick(self, now: float, view: CacheView) -> Decision:
        load: list[str] = []
        evict: list[str] = []
        for model, action in self._timers.due(now):  # each sets timers only after ``now``
            if action is Action.UNLOAD:
                if model in self._resident:
                    self._timers.set(model, Action.UNLOAD, now + RESIDENT_EVERY)
                    continue
                keep = self._after_silence(model, now, view)
                if keep is not None:
                    if not keep and view.is_ready(model) and model not in evict:
                        evict.append(model)
                elif view.is_loading(model):
                    self._unload_when_ready.add(model)  # a short keep-alive ran out before the load did
                elif view.is_ready(model) and model not in evict:
                    later = self._stretch(model, now, view)
                    if later is not None:
                        self._timers.set(model, Action.UNLOAD, later)
                        continue
                    evict.append(model)
                    self._expected.pop(model, None)
            elif not view.is_ready(model) and not view.is_loading(model):
                self._admit(model, now, view, load, evict)
        if self._next_slot is not None and now >= self._next_slot - SLOT_LEAD:
            self._prepare_slot(self._next_slot, now, view, load, evict)
            self._next_slot += SLOT_SECONDS
        if self._resident_at is not None and now >= self._resident_at:
            self._refresh_resident(now, view, load, evict)
            self._resident_at = now + RESIDENT_EVERY
        return Decision(tuple(load), tuple(evict), self._wake_at())

    def _refresh_resident(self, now: float, view: CacheView, load: list[str], evict: list[str]) -> None:
        """Choose the resident set again and load its members that are not loaded, densest first."""
        if now >= self._announced_until:
            self._announced_cache.clear()
            self._announced_until = now + ANNOUNCED_EVERY
        unplanned = [(m, h) for m, h in self._history.items() if self._unplanned(m, h)]
        capacity = (
            RESIDENT_SHARE * view.budget_mb
            - BURST_PEAK * residency.bursting_mb(unplanned, view.info, now, CLUMPED)
            - residency.scheduled_mb(self._history.items(), view.info, SAFETY)
        )
        self._resident, self._sparse = residency.members(unplanned, view.info, now, now - self._origin, capacity)
        order: list[str] | None = None  # what members may displace, cheapest first; ranked once, if needed
        for model in sorted(self._resident, key=self._resident.__getitem__, reverse=True):
            if view.is_ready(model) or view.is_loading(model) or model in load:
                continue
            if order is None:
                order = sorted(
                    (m for m in evictable(view) if self._displaceable(m, now)),
                    key=lambda m: self._value(m, now, view, HORIZON),
                )
            need = view.info(model).size_mb + sum(view.info(m).size_mb for m in load)
            freed = sum(view.info(m).size_mb for m in evict)
            victims = victims_for(view, need, (m for m in order if m not in evict), freed)
            if victims is not None:
                evict.extend(victims)
                load.append(model)
                self._keep_until(model, now + RESIDENT_EVERY)

    def _unplanned(self, model: str, history: ArrivalHistory) -> bool:
        """True when nothing loads ``model`` ahead of its requests: no schedule, no leader that announces it."""
        if history.schedule is not None or history.burst_schedule is not None:
            return False
        return not self._announced(model)

    def _announced(self, model: str) -> bool:
        """True when ``model``'s leaders announce at least ``ANNOUNCED`` of its bursts.

        Remembered for up to ``ANNOUNCED_EVERY``: the share moves slowly, and reading it is a pass over every
        model seen to precede this one often enough, which on busy traces is most of them."""
        known = self._announced_cache.get(model)
        if known is None:
            share = self._followers.announced_share(model, self._background_chance)
            known = self._announced_cache[model] = share >= ANNOUNCED
        return known

    def _displaceable(self, model: str, now: float) -> bool:
        """True when the resident set may evict ``model``: not a member, not mid-burst, nothing announced."""
        if model in self._resident:
            return False
        history = self._history.get(model)
        if history is not None and now - history.last < ACTIVATION_GAP:
            return False
        window = self._expected.get(model)
        return window is None or not (window[0] - ADMIT_HORIZON <= now <= window[1])

    def _after_silence(self, model: str, now: float, view: CacheView) -> bool | None:
        """Plan a scheduled model's next request one period on when the one due did not come; None when
        no schedule applies, else whether to keep the model loaded until then.

        A schedule skips a tick now and then (a job that did not run); unloading for good at the first
        silence would make the next tick cold. Up to ``MAX_SKIPPED`` ticks in a row are waited out."""
        history = self._history.get(model)
        window = self._expected.get(model)
        if history is None or window is None or (schedule := history.schedule) is None:
            return None
        due = window[0] + schedule.jitter + schedule.period
        if due - history.last > (MAX_SKIPPED + 1) * schedule.period + schedule.jitter or due + schedule.jitter < now:
            return None  # silent too long, or the window is one a later keep-alive outlived
        self._expected[model] = (due - schedule.jitter, due + schedule.jitter + SAFETY)
        self._timers.set(model, Action.UNLOAD, due + schedule.jitter + SAFETY)
        preload = due - schedule.jitter - view.info(model).load_seconds - SAFETY
        if preload - now > MIN_GAP:
            self._timers.set(model, Action.LOAD, preload)
            return False
        return True

    def _stretch(self, model: str, now: float, view: CacheView) -> float | None:
        """A later unload time for a model whose keep-alive ran out while memory is roomy, or None.

        Memory nobody needs costs no cold start, so while it is less than ``ROOMY`` full a model without a
        schedule stays to the 99th percentile of its inter-arrival times, as hybrid-histogram keeps it."""
        history = self._history.get(model)
        if history is None or history.schedule is not None or view.used_mb > ROOMY * view.budget_mb:
            return None
        tail = history.interval_quantile(0.99)
        if tail is None:
            return None
        until = history.last + min(tail, MAX_KEEP_ALIVE) + SAFETY
        return until if until > now else None

    def _prepare_slot(self, start: float, now: float, view: CacheView, load: list[str], evict: list[str]) -> None:
        """Pre-load models the time of day and week expects requests for in the quarter hour at ``start``, and
        keep those already loaded through it."""
        for model, history in self._history.items():
            if model in load or history.schedule is not None:
                continue  # a schedule already plans this model's loads
            if history.expected_in(start, SLOT_SECONDS) < ACTIVE_SLOT and not history.daily_near(start, SPARSE_DAILY):
                continue
            loaded = view.is_ready(model) or view.is_loading(model)
            if loaded and self._timers.at(model, Action.UNLOAD) is None:
                continue  # nothing unloads it: a resident member, or an unload pending its load
            self._keep_until(model, start + SLOT_SECONDS)
            if not loaded:
                self._admit(model, now, view, load, evict)

    def _admit(self, model: str, now: float, view: CacheView, load: list[str], evict: list[str]) -> None:
        """Add a pre-load of ``model`` to the decision if the models it displaces are worth less together.

        Victims go cheapest per MB first, and their worth is summed (requests expected within
        ``ADMIT_HORIZON`` times load time): twenty small models likely to be used soon are not traded for
        one large one."""
        need = view.info(model).size_mb + sum(view.info(m).size_mb for m in load)
        freed = sum(view.info(m).size_mb for m in evict)
        if view.used_mb - freed + need <= view.budget_mb:
            load.append(model)
            return
        per_mb = {m: self._value(m, now, view, ADMIT_HORIZON) for m in evictable(view) if m not in evict}
        victims = victims_for(view, need, sorted(per_mb, key=per_mb.__getitem__), freed)
        if victims is None:
            return
        worth = self._value(model, now, view, ADMIT_HORIZON, certain=True) * view.info(model).size_mb
        if sum(per_mb[m] * view.info(m).size_mb for m in victims) < worth:
            evict.extend(victims)
            load.append(model)

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        if now != self._values_at:
            self._values.clear()
            self._values_at = now
        values = self._values
        for model in candidates:
            if model not in values:
                values[model] = self._value(model, now, view, HORIZON)
        resident = self._resident
        return sorted(candidates, key=lambda m: (m in resident, values[m]))

    def _value(self, model: str, now: float, view: CacheView, horizon: float, *, certain: bool = False) -> float:
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

    def _wake_at(self) -> float | None:
        timer = self._timers.next_at()
        slot = None if self._next_slot is None else self._next_slot - SLOT_LEAD
        return min((t for t in (timer, slot, self._resident_at) if t is not None), default=None)

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

Every timer carries the reason of whatever set it (``reasons``), so each load and eviction says why, and
``planned`` lists what the timers and the next quarter hour intend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelserve.prewarm import reasons, residency
from modelserve.prewarm.cooccurrence import WINDOW, FollowerTable
from modelserve.prewarm.patterns import ACTIVATION_GAP, CLUMPED, SLOT_SECONDS, ArrivalHistory
from modelserve.prewarm.policy import (
    NOTHING,
    CacheView,
    Decision,
    Forecast,
    Pattern,
    Policy,
    Step,
    evictable,
    victims_for,
)
from modelserve.prewarm.reasons import Draft, Why, text
from modelserve.prewarm.timeofday import next_slot, slot_why
from modelserve.prewarm.timers import Action, Timers
from modelserve.prewarm.worth import ADMIT_HORIZON, HORIZON, Worth

SAFETY = 1.0  # seconds a pre-load finishes ahead of the earliest expected request
MIN_GAP = 2.0  # unloading between two scheduled requests must free at least this long
MAX_SKIPPED = 2  # ticks of a schedule that may pass without a request before it is no longer expected
KEEP_QUANTILE = 0.9
DEFAULT_KEEP_ALIVE = 600.0  # before a model has four inter-arrival times
MAX_KEEP_ALIVE = 4 * 3600.0
ROOMY = 0.9  # below this share of the budget in use, keep-alives stretch to the 99th percentile
GAP_QUANTILE = 0.75  # a clumped model is kept through gaps between bursts up to this quantile of them
SLOT_LEAD = 120.0  # time-of-day pre-loads start this long before their quarter hour
RESIDENT_EVERY = 120.0  # seconds between two choices of the resident set
RESIDENT_SHARE = 0.8  # share of the budget the resident set may fill; the rest is for loads on demand
BURST_PEAK = 2.0  # the resident set leaves this many times the memory bursts hold on average
UNSAID: Why = (reasons.keep_alive, (DEFAULT_KEEP_ALIVE,))  # for a timer set before reasons were noted


class PredictivePolicy(Policy):
    """Periodicity, co-occurrence, time of day and week, and size and load time (see the module docstring)."""

    name = "predictive"

    def __init__(self) -> None:
        self._history: dict[str, ArrivalHistory] = {}
        self._followers = FollowerTable()
        self._timers = Timers()
        self._load_why: dict[str, Why] = {}  # the reason of each model's pending load timer
        self._unload_why: dict[str, Why] = {}  # ... and of its pending unload timer
        # The window in which a schedule or a leader announces the next request: (earliest, latest).
        self._expected: dict[str, tuple[float, float]] = {}
        self._unload_when_ready: dict[str, Why] = {}  # unloads ordered while the model loads
        self._next_slot: float | None = None  # the next quarter hour the time of day prepares for
        self._worth = Worth(self._history, self._expected)
        self._resident: dict[str, float] = {}  # the resident set, with each model's density
        self._resident_at: float | None = None  # when the resident set is chosen next
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
        self._worth.forget(model)
        draft = Draft()
        unload = self._plan(model, history, now, view)
        if unload is not None:
            if view.is_ready(model):
                draft.drop(model, text(unload, now))
            else:
                self._unload_when_ready[model] = unload
        if activation:
            self._prepare_followers(model, now, view, draft)
        if self._next_slot is None:
            self._next_slot = (math.floor(now / SLOT_SECONDS) + 1) * SLOT_SECONDS
            self._resident_at = now + RESIDENT_EVERY
        return draft.decision(self._wake_at())

    def _set(self, model: str, action: Action, at: float, why: Why) -> None:
        self._timers.set(model, action, at)
        (self._load_why if action is Action.LOAD else self._unload_why)[model] = why

    def _plan(self, model: str, history: ArrivalHistory, now: float, view: CacheView) -> Why | None:
        """Set ``model``'s timers after a request; the reason to unload it now, if it should be."""
        lead = view.info(model).load_seconds + SAFETY
        timers = self._timers
        self._unload_when_ready.pop(model, None)
        schedule = history.schedule
        if schedule is not None:
            period, jitter = schedule.period, schedule.jitter
            due = now + period
            end = due + jitter + SAFETY
            self._expected[model] = (due - jitter, end)
            self._set(model, Action.UNLOAD, end, (reasons.schedule_window, (end, period, jitter)))
            preload = due - jitter - lead
            if preload - now > MIN_GAP:
                self._set(model, Action.LOAD, preload, (reasons.schedule_due, (due, period, jitter)))
                return (reasons.schedule_between, (due, period, jitter, preload))
            timers.cancel(model, Action.LOAD)
            return None
        timers.cancel(model, Action.LOAD)
        bursts = history.burst_schedule
        if bursts is not None:
            period, jitter = bursts.period, bursts.jitter
            due = history.last_activation + period
            end = due + jitter + SAFETY
            self._expected[model] = (due - jitter, end)
            burst_end = now + min(1.5 * history.burst_keep_alive() + SAFETY, ACTIVATION_GAP)
            preload = due - jitter - lead
            if preload - burst_end > MIN_GAP:
                self._set(model, Action.UNLOAD, burst_end, (reasons.burst_over, (due, period, jitter)))
                self._set(model, Action.LOAD, preload, (reasons.bursts_due, (due, period, jitter)))
            else:
                self._set(model, Action.UNLOAD, end, (reasons.bursts_window, (end, period, jitter)))
            return None
        keep = history.interval_quantile(KEEP_QUANTILE)
        keep = DEFAULT_KEEP_ALIVE if keep is None else keep
        keep = max(keep, 1.5 * history.burst_keep_alive())  # never unload in the middle of a burst
        if history.burst_size() >= CLUMPED:
            # Its inter-arrival times are mostly the gaps inside bursts: what decides a cold start is
            # whether the model outlives the gap before the next burst.
            keep = max(keep, history.activation_gap_quantile(GAP_QUANTILE) or 0.0)
        keep = min(keep, MAX_KEEP_ALIVE)
        why: Why = (reasons.keep_alive, (keep,))
        # Its keep-alive's memory went to the densest sparse models (``residency.members``), or its leader's
        # next burst will load it in time: either way, holding it until then is idle memory.
        if model in self._sparse and model not in self._resident:
            keep = 1.5 * history.burst_keep_alive()
            why = (reasons.sparse, ((now - self._origin) / history.activation_count,))
        elif self._followers.announced(model, self._background_chance):
            keep = 1.5 * history.burst_keep_alive()
            why = (reasons.announced, ())
        self._set(model, Action.UNLOAD, now + keep + SAFETY, why)
        return None

    def _prepare_followers(self, leader: str, now: float, view: CacheView, draft: Draft) -> None:
        for follower in self._followers.followers(leader, self._background_chance):
            model = follower.model
            if view.is_ready(model) or view.is_loading(model) or model in draft.load:
                continue
            due = now + follower.lag_min
            end = now + follower.lag_max + SAFETY
            self._expected[model] = (due, end)
            self._keep_until(model, end, (reasons.followed, (leader, follower.lag_max)))
            start = due - view.info(model).load_seconds - SAFETY
            why: Why = (reasons.follows, (leader, follower.lag_min, follower.lag_max))
            if start > now:
                self._set(model, Action.LOAD, start, why)
            else:
                self._worth.admit(model, now, view, draft, why)

    def _background_chance(self, model: str) -> float:
        history = self._history.get(model)
        return 0.0 if history is None else 1.0 - math.exp(-history.rate() * WINDOW)

    def _keep_until(self, model: str, until: float, why: Why) -> None:
        planned = self._timers.at(model, Action.UNLOAD)
        if planned is None or planned < until:
            self._set(model, Action.UNLOAD, until, why)

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        why = self._unload_when_ready.pop(model, None)
        if why is not None:
            return Decision(evict=(model,), wake_at=self._wake_at(), why={model: reasons.after_load(now, why)})
        return NOTHING

    def on_unloaded(self, model: str, now: float, view: CacheView) -> Decision:
        self._timers.cancel(model, Action.UNLOAD)
        return NOTHING

    def tick(self, now: float, view: CacheView) -> Decision:
        draft = Draft()
        for model, action in self._timers.due(now):  # each sets timers only after ``now``
            if action is Action.UNLOAD:
                if model in self._resident:
                    self._set(model, Action.UNLOAD, now + RESIDENT_EVERY, (reasons.left_resident, ()))
                    continue
                missed = self._after_silence(model, now, view)
                if missed is not None:
                    if missed[0] and view.is_ready(model) and model not in draft.evict:
                        draft.drop(model, text(missed[1], now))
                    continue
                why = self._unload_why.get(model, UNSAID)
                if view.is_loading(model):
                    self._unload_when_ready[model] = why  # a short keep-alive ran out before the load did
                elif view.is_ready(model) and model not in draft.evict:
                    later = self._stretch(model, now, view)
                    if later is not None:
                        self._set(model, Action.UNLOAD, later, (reasons.stretched, (later - now,)))
                        continue
                    draft.drop(model, text(why, now))
                    self._expected.pop(model, None)
            elif not view.is_ready(model) and not view.is_loading(model):
                self._worth.admit(model, now, view, draft, self._load_why.get(model, UNSAID))
        if self._next_slot is not None and now >= self._next_slot - SLOT_LEAD:
            self._prepare_slot(self._next_slot, now, view, draft)
            self._next_slot += SLOT_SECONDS
        if self._resident_at is not None and now >= self._resident_at:
            self._refresh_resident(now, view, draft)
            self._resident_at = now + RESIDENT_EVERY
        return draft.decision(self._wake_at())

    def _refresh_resident(self, now: float, view: CacheView, draft: Draft) -> None:
        """Choose the resident set again and load its members that are not loaded, densest first."""
        self._followers.refresh(now)
        unplanned = [(m, h) for m, h in self._history.items() if self._unplanned(m, h)]
        capacity = (
            RESIDENT_SHARE * view.budget_mb
            - BURST_PEAK * residency.bursting_mb(unplanned, view.info, now, CLUMPED)
            - residency.scheduled_mb(self._history.items(), view.info, SAFETY)
        )
        self._resident, self._sparse = residency.members(unplanned, view.info, now, now - self._origin, capacity)
        order: list[str] | None = None  # what members may displace, cheapest first; ranked once, if needed
        members = sorted(self._resident, key=self._resident.__getitem__, reverse=True)
        for rank, model in enumerate(members, 1):
            if view.is_ready(model) or view.is_loading(model) or model in draft.load:
                continue
            if order is None:
                order = sorted(
                    (m for m in evictable(view) if self._displaceable(m, now)),
                    key=lambda m: self._worth.value(m, now, view, HORIZON),
                )
            need = view.info(model).size_mb + sum(view.info(m).size_mb for m in draft.load)
            freed = sum(view.info(m).size_mb for m in draft.evict)
            victims = victims_for(view, need, (m for m in order if m not in draft.evict), freed)
            if victims is not None:
                for victim in victims:
                    draft.drop(victim, reasons.displaced_by_member(now, model))
                draft.add(model, reasons.resident(now, rank, len(members)))
                self._keep_until(model, now + RESIDENT_EVERY, (reasons.left_resident, ()))

    def _unplanned(self, model: str, history: ArrivalHistory) -> bool:
        """True when nothing loads ``model`` ahead of its requests: no schedule, no leader that announces it."""
        if history.schedule is not None or history.burst_schedule is not None:
            return False
        return not self._followers.announced(model, self._background_chance)

    def _displaceable(self, model: str, now: float) -> bool:
        """True when the resident set may evict ``model``: not a member, not mid-burst, nothing announced."""
        if model in self._resident:
            return False
        history = self._history.get(model)
        if history is not None and now - history.last < ACTIVATION_GAP:
            return False
        window = self._expected.get(model)
        return window is None or not (window[0] - ADMIT_HORIZON <= now <= window[1])

    def _after_silence(self, model: str, now: float, view: CacheView) -> tuple[bool, Why] | None:
        """Plan a scheduled model's next request one period on when the one due did not come; None when
        no schedule applies, else whether to unload the model until then, and why.

        A schedule skips a tick now and then (a job that did not run); unloading for good at the first
        silence would make the next tick cold. Up to ``MAX_SKIPPED`` ticks in a row are waited out."""
        history = self._history.get(model)
        window = self._expected.get(model)
        if history is None or window is None or (schedule := history.schedule) is None:
            return None
        period, jitter = schedule.period, schedule.jitter
        due = window[0] + jitter + period
        if due - history.last > (MAX_SKIPPED + 1) * period + jitter or due + jitter < now:
            # Silent too long, or the window is one a later keep-alive outlived.
            self._unload_why[model] = (reasons.schedule_over, (history.last, period))
            return None
        end = due + jitter + SAFETY
        self._expected[model] = (due - jitter, end)
        self._set(model, Action.UNLOAD, end, (reasons.schedule_window, (end, period, jitter)))
        preload = due - jitter - view.info(model).load_seconds - SAFETY
        if preload - now > MIN_GAP:
            self._set(model, Action.LOAD, preload, (reasons.schedule_due, (due, period, jitter)))
            return True, (reasons.schedule_missed, (due, period, jitter))
        return False, (reasons.schedule_window, (end, period, jitter))

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

    def _prepare_slot(self, start: float, now: float, view: CacheView, draft: Draft) -> None:
        """Pre-load models the time of day and week expects requests for in the quarter hour at ``start``, and
        keep those already loaded through it."""
        for model, history in self._history.items():
            if model in draft.load or (why := slot_why(history, start)) is None:
                continue
            loaded = view.is_ready(model) or view.is_loading(model)
            if loaded and self._timers.at(model, Action.UNLOAD) is None:
                continue  # nothing unloads it: a resident member, or an unload pending its load
            self._keep_until(model, start + SLOT_SECONDS, (reasons.slot_over, (start,)))
            if not loaded:
                self._worth.admit(model, now, view, draft, why)

    def planned(self, now: float, view: CacheView) -> list[Step]:
        """The pending timers that would act (a load of a model not held, an unload of one held or loaded
        before it), unloads waiting for a load to end, and the next quarter hour's pre-loads, soonest first.

        Resident members are left out of the unloads: their unload is put off while they stay members."""
        steps: list[Step] = []
        timers = self._timers
        for at, model, action in timers.pending():
            held = view.is_ready(model) or view.is_loading(model)
            if action is Action.LOAD:
                if not held:
                    steps.append(Step("load", model, at, text(self._load_why.get(model, UNSAID), now)))
            elif model not in self._resident and (held or (timers.at(model, Action.LOAD) or math.inf) <= at):
                steps.append(Step("evict", model, at, text(self._unload_why.get(model, UNSAID), now)))
        for model, why in self._unload_when_ready.items():
            if view.is_loading(model):
                steps.append(Step("evict", model, now, reasons.after_load(now, why)))
        if self._next_slot is not None:
            at = max(self._next_slot - SLOT_LEAD, now)
            for model, history in self._history.items():
                held = view.is_ready(model) or view.is_loading(model)
                if held or timers.at(model, Action.LOAD) is not None:
                    continue
                if (slot := slot_why(history, self._next_slot)) is not None:
                    steps.append(Step("load", model, at, text(slot, now)))
        steps.sort(key=lambda step: step.at)
        return steps

    def forecast(self, model: str, now: float) -> Forecast:
        """The first pattern that plans ``model``'s loads, in the order ``_plan`` reads them, and when its next
        request is expected: a schedule's or a leader's window, or the next quarter hour the time of day
        expects it in; bursts that start at random say nothing of when."""
        history = self._history.get(model)
        if history is None:
            return Forecast(model, Pattern.NONE, None)
        window = self._expected.get(model)
        announced = window[0] if window is not None and window[1] >= now else None
        schedule = history.schedule or history.burst_schedule
        if schedule is not None:
            if announced is None:
                last = history.last if history.schedule is not None else history.last_activation
                periods = max(math.ceil((now - last - schedule.jitter) / schedule.period), 1)
                announced = last + periods * schedule.period - schedule.jitter
            return Forecast(model, Pattern.SCHEDULE, announced)
        if self._followers.announced(model, self._background_chance):
            return Forecast(model, Pattern.FOLLOWER, announced)
        if history.burst_size() >= CLUMPED:
            return Forecast(model, Pattern.BURST, announced)
        slot = next_slot(history, now)
        if slot is not None:
            return Forecast(model, Pattern.DAILY_WINDOW, slot)
        return Forecast(model, Pattern.NONE, announced)

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        return self._worth.eviction_order(now, view, candidates, self._resident)

    def _wake_at(self) -> float | None:
        timer = self._timers.next_at()
        slot = None if self._next_slot is None else self._next_slot - SLOT_LEAD
        return min((t for t in (timer, slot, self._resident_at) if t is not None), default=None)

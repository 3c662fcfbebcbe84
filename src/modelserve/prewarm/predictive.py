"""``predictive``: load a model before its traffic arrives, unload it while it is not needed, and under
memory pressure evict what is least worth keeping. docs/PREWARM.md explains the design and its sources.

After each request the policy plans the model's next need from the first signal that applies: a **fixed
rate** (unload now, load again ``load_seconds + jitter + SAFETY`` before the next request is due), **bursts
on a schedule** (keep through the burst, pre-load before the next), or else a **keep-alive** from the model's
own gaps, cut short at the end of its **daily window** and stretched while memory is roomy (under ``ROOMY``).
**Co-occurrence** loads a leader's followers in time for their lag, and the **time of day and week** loads
models expected in the next quarter hour. Models no signal foresees are kept by their rate: every
``RESIDENT_EVERY`` seconds the **resident set** (``residency``) is chosen, the most bursts per MB at this
hour (for a model keeping office hours, its window's rate within it, none outside), and loads on demand
evict its members last; sparse models and those not worth their memory get no keep-alive past a burst.
Under a budget, loads on demand evict the lowest ``P(request within HORIZON) * load_seconds / size_mb``
first (``worth``: FaaSCache's Greedy-Dual value), and a pre-load evicts only models worth less than itself.
Every timer carries the reason of whatever set it (``reasons``), so each load and eviction says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelserve.prewarm import reasons, residency
from modelserve.prewarm.cooccurrence import WINDOW, FollowerTable
from modelserve.prewarm.daily import DailyWindow
from modelserve.prewarm.patterns import ACTIVATION_GAP, CLUMPED, SLOT_SECONDS, ArrivalHistory
from modelserve.prewarm.policy import (
    DEVICES,
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
from modelserve.prewarm.reasons import Draft, Plans, Why, text
from modelserve.prewarm.timeofday import next_slot, slot_why
from modelserve.prewarm.timers import Action
from modelserve.prewarm.worth import ADMIT_HORIZON, HORIZON, Worth

SAFETY = 1.0  # seconds a pre-load finishes ahead of the earliest expected request
MIN_GAP = 2.0  # unloading between two scheduled requests must free at least this long
MAX_SKIPPED = 2  # ticks of a schedule that may pass without a request before it is no longer expected
KEEP_QUANTILE = 0.9
DEFAULT_KEEP_ALIVE = 600.0  # before a model has four inter-arrival times, or a second burst
MAX_KEEP_ALIVE = 4 * 3600.0
ROOMY = 0.9  # below this share of the budget in use, keep-alives stretch to the 99th percentile
GAP_QUANTILE = 0.75  # a clumped model is kept through gaps between bursts up to this quantile of them
SLOT_LEAD = 120.0  # time-of-day pre-loads start this long before their quarter hour
RESIDENT_EVERY = 120.0  # seconds between two choices of the resident set
RESIDENT_SHARE = 0.8  # share of the budget the resident set may fill; the rest is for loads on demand
BURST_PEAK = 2.0  # the resident set leaves this many times the memory bursts hold on average


class PredictivePolicy(Policy):
    """Periodicity, co-occurrence, time of day and week, and size and load time (see the module docstring)."""

    name = "predictive"

    def __init__(self) -> None:
        self._history: dict[str, ArrivalHistory] = {}
        self._followers = FollowerTable()
        self._timers = Plans()
        # The window in which a schedule or a leader announces the next request: (earliest, latest).
        self._expected: dict[str, tuple[float, float]] = {}
        self._unload_when_ready: dict[str, Why] = {}  # unloads ordered while the model loads
        self._next_slot: float | None = None  # the next quarter hour the time of day prepares for
        self._worth = Worth(self._history, self._expected)
        self._resident: dict[str, float] = {}  # the resident set, with each model's density
        self._resident_at: float | None = None  # when the resident set is chosen next
        self._origin = math.inf  # the first request seen: sparse rates count from there
        self._sparse: set[str] = set()  # models rated sparse at the last choice of the resident set
        self._thin: set[str] = set()  # models not worth their memory at the last choice (``residency.THIN``)

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
            self._timers.plan(model, Action.UNLOAD, end, (reasons.schedule_window, (end, period, jitter)))
            preload = due - jitter - lead
            if preload - now > MIN_GAP:
                self._timers.plan(model, Action.LOAD, preload, (reasons.schedule_due, (due, period, jitter)))
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
                self._timers.plan(model, Action.UNLOAD, burst_end, (reasons.burst_over, (due, period, jitter)))
                self._timers.plan(model, Action.LOAD, preload, (reasons.bursts_due, (due, period, jitter)))
            else:
                self._timers.plan(model, Action.UNLOAD, end, (reasons.bursts_window, (end, period, jitter)))
            return None
        keep = history.interval_quantile(KEEP_QUANTILE)
        # Before a second burst its gaps are the first burst's alone, which say nothing of the next burst.
        keep = DEFAULT_KEEP_ALIVE if keep is None or history.activation_count < 2 else keep
        keep = max(keep, 1.5 * history.burst_keep_alive())  # never unload in the middle of a burst
        if history.burst_size() >= CLUMPED:
            # Its inter-arrival times are mostly the gaps inside bursts: what decides a cold start is
            # whether the model outlives the gap before the next burst.
            keep = max(keep, history.activation_gap_quantile(GAP_QUANTILE) or 0.0)
        keep = min(keep, MAX_KEEP_ALIVE)
        why: Why = (reasons.keep_alive, (keep,))
        close = self._closes(model, now)
        if close is not None and now + keep > close:  # its daily window's end ends its keep-alive too
            keep, why = max(close - now, 1.5 * history.burst_keep_alive()), (reasons.window_closes, (close,))
        # Its keep-alive's memory went to the densest sparse models (``residency.members``), or is worth less
        # than theirs, or its leader's next burst will load it in time: holding it until then is idle memory.
        if model in self._sparse and model not in self._resident:
            keep = 1.5 * history.burst_keep_alive()
            why = (reasons.sparse, ((now - self._origin) / history.activation_count,))
        elif model in self._thin and model not in self._resident:
            keep = 1.5 * history.burst_keep_alive()
            why = (reasons.thin, ())
        elif self._followers.announced(model, self._background_chance):
            keep = 1.5 * history.burst_keep_alive()
            why = (reasons.announced, ())
        self._timers.plan(model, Action.UNLOAD, now + keep + SAFETY, why)
        return None

    def _prepare_followers(self, leader: str, now: float, view: CacheView, draft: Draft) -> None:
        for follower in self._followers.followers(leader, self._background_chance):
            model = follower.model
            if view.is_ready(model) or view.is_loading(model) or model in draft.load:
                continue
            due = now + follower.lag_min
            end = now + follower.lag_max + SAFETY
            self._expected[model] = (due, end)
            self._timers.keep_until(model, end, (reasons.followed, (leader, follower.lag_max)))
            start = due - view.info(model).load_seconds - SAFETY
            why: Why = (reasons.follows, (leader, follower.lag_min, follower.lag_max))
            if start > now:
                self._timers.plan(model, Action.LOAD, start, why)
            else:
                self._worth.admit(model, now, view, draft, why)

    def _background_chance(self, model: str) -> float:
        history = self._history.get(model)
        return 0.0 if history is None else 1.0 - math.exp(-history.rate() * WINDOW)

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
                    daily = self._daily(model, now)
                    span = None if daily is None else daily.span(now)
                    kept: Why = (reasons.left_resident, ()) if span is None else (reasons.window_over, span)
                    self._timers.plan(model, Action.UNLOAD, now + RESIDENT_EVERY, kept)
                    continue
                missed = self._after_silence(model, now, view)
                if missed is not None:
                    if missed[0] and view.is_ready(model) and model not in draft.evict:
                        draft.drop(model, text(missed[1], now))
                    continue
                why = self._timers.why(model, Action.UNLOAD)
                if view.is_loading(model):
                    self._unload_when_ready[model] = why  # a short keep-alive ran out before the load did
                elif view.is_ready(model) and model not in draft.evict:
                    later = self._stretch(model, now, view)
                    if later is not None:
                        self._timers.plan(model, Action.UNLOAD, later, (reasons.stretched, (later - now,)))
                        continue
                    draft.drop(model, text(why, now))
                    self._expected.pop(model, None)
            elif not view.is_ready(model) and not view.is_loading(model):
                self._worth.admit(model, now, view, draft, self._timers.why(model, Action.LOAD))
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
        dailies = {m: d for m, _ in unplanned if (d := self._daily(m, now)) is not None}
        windowed = {m: d.rate(now, self._origin) for m, d in dailies.items()}
        self._resident, self._sparse, self._thin = {}, set(), set()
        for device in DEVICES:  # each memory holds a resident set of its own models
            if view.budget_of(device) <= 0.0:
                continue
            here = [(m, h) for m, h in unplanned if view.info(m).device == device]
            scheduled = ((m, h) for m, h in self._history.items() if view.info(m).device == device)
            capacity = (
                RESIDENT_SHARE * view.budget_of(device)
                - BURST_PEAK * residency.bursting_mb(here, view.info, now, CLUMPED, windowed)
                - residency.scheduled_mb(scheduled, view.info, SAFETY)
            )
            chosen = residency.members(here, view.info, now, now - self._origin, capacity, windowed)
            self._resident |= chosen.members
            self._sparse |= chosen.sparse
            self._thin |= chosen.thin
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
            device = view.info(model).device
            need = view.info(model).size_mb + mb_on(view, draft.load, device)
            freed = mb_on(view, draft.evict, device)
            victims = victims_for(view, need, (m for m in order if m not in draft.evict), freed, device)
            if victims is not None:
                for victim in victims:
                    draft.drop(victim, reasons.displaced_by_member(now, model))
                span = None if model not in dailies else dailies[model].span(now)
                ends: Why
                if span is None:
                    why, ends = reasons.resident(now, rank, len(members)), (reasons.left_resident, ())
                else:
                    why = reasons.window_member(now, *span, windowed[model], rank, len(members))
                    ends = (reasons.window_over, span)
                draft.add(model, why)
                self._timers.keep_until(model, now + RESIDENT_EVERY, ends)

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
            self._timers.note(model, Action.UNLOAD, (reasons.schedule_over, (history.last, period)))
            return None
        end = due + jitter + SAFETY
        self._expected[model] = (due - jitter, end)
        self._timers.plan(model, Action.UNLOAD, end, (reasons.schedule_window, (end, period, jitter)))
        preload = due - jitter - view.info(model).load_seconds - SAFETY
        if preload - now > MIN_GAP:
            self._timers.plan(model, Action.LOAD, preload, (reasons.schedule_due, (due, period, jitter)))
            return True, (reasons.schedule_missed, (due, period, jitter))
        return False, (reasons.schedule_window, (end, period, jitter))

    def _stretch(self, model: str, now: float, view: CacheView) -> float | None:
        """A later unload time for a model whose keep-alive ran out while memory is roomy, or None.

        Memory nobody needs costs no cold start, so while it is less than ``ROOMY`` full a model without a
        schedule stays to the 99th percentile of its inter-arrival times, as hybrid-histogram keeps it."""
        history = self._history.get(model)
        device = view.info(model).device
        if history is None or history.schedule is not None or view.used_of(device) > ROOMY * view.budget_of(device):
            return None
        if model in self._thin and model not in self._resident:
            return None  # memory nobody needs is still memory-time, more than this model is worth
        tail = history.interval_quantile(0.99)
        if tail is None:
            return None
        until = history.last + min(tail, MAX_KEEP_ALIVE) + SAFETY
        close = self._closes(model, history.last)
        return until if until > now and (close is None or until <= close) else None

    def _daily(self, model: str, now: float) -> DailyWindow | None:
        """``model``'s daily window, when it keeps one and no schedule plans it."""
        history = self._history[model]
        daily = history.daily
        if daily.read(now) is None or not daily.ready(now, self._origin) or history.schedule or history.burst_schedule:
            return None
        return daily

    def _closes(self, model: str, now: float) -> float | None:
        """When the daily window ``model`` is in at ``now`` closes, or None."""
        daily = self._daily(model, now)
        return None if daily is None else daily.closes(now)

    def _prepare_slot(self, start: float, now: float, view: CacheView, draft: Draft) -> None:
        """Pre-load models the time of day and week expects requests for in the quarter hour at ``start``, and
        keep those already loaded through it."""
        for model, history in self._history.items():
            if model in draft.load or (why := slot_why(history, start)) is None or self._daily(model, now) is not None:
                continue  # a daily window's model is held by its window's rate (``_refresh_resident``)
            loaded = view.is_ready(model) or view.is_loading(model)
            if loaded and self._timers.at(model, Action.UNLOAD) is None:
                continue  # nothing unloads it: a resident member, or an unload pending its load
            self._timers.keep_until(model, start + SLOT_SECONDS, (reasons.slot_over, (start,)))
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
            if action is Action.LOAD and not held:
                steps.append(Step("load", model, at, text(timers.why(model, action), now)))
            elif action is Action.UNLOAD and model not in self._resident and (held or at >= timers.loads_at(model)):
                steps.append(Step("evict", model, at, text(timers.why(model, action), now)))
        for model, why in self._unload_when_ready.items():
            if view.is_loading(model):
                steps.append(Step("evict", model, now, reasons.after_load(now, why)))
        if self._next_slot is not None:
            at = max(self._next_slot - SLOT_LEAD, now)
            for model, history in self._history.items():
                held = view.is_ready(model) or view.is_loading(model)
                if held or timers.at(model, Action.LOAD) is not None or self._daily(model, now) is not None:
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
        if history.schedule is not None or history.burst_schedule is not None:
            return Forecast(model, Pattern.SCHEDULE, announced or history.next_due(now))
        if self._followers.announced(model, self._background_chance):
            return Forecast(model, Pattern.FOLLOWER, announced)
        daily = self._daily(model, now)
        if daily is not None:
            opens = daily.upcoming(now, self._origin)
            return Forecast(model, Pattern.DAILY_WINDOW, None if opens is None else max(opens, now))
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

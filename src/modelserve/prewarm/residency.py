"""The resident set: the models worth keeping loaded whether or not a request is due.

A model whose next burst cannot be foreseen (it starts at random, as Poisson arrivals do) is cold at that
burst unless it happens to be loaded. What keeps the most such bursts warm under a budget is not recency,
which says little about a memoryless process, but each model's rate of bursts per MB: a knapsack filled by
that density, as the static optimum for independent references (the A0 policy of Aho, Denning and Ullman)
fills a cache by probability. The rate is read at the time of day, so a model busy in the morning holds
memory in the morning only. Models a schedule or a leader loads in time need no place here; models whose
bursts come hours apart share a smaller room of their own (:func:`members`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from modelserve.prewarm.patterns import CLUMPED, SPAN_FLOOR, ArrivalHistory
from modelserve.prewarm.policy import ModelInfo

RESIDENT_REACH = 4 * 3600.0  # a model whose bursts come further apart than this on average is "sparse"
SPARSE_KEEP = 8 * 3600.0  # sparse members may hold what keep-alives this long would hold for all of them
SPARSE_PRIOR = 86400.0  # sparse rates count from the first request seen, plus this: one sighting is no rate
SPARSE_AFTER = 86400.0  # no model is sparse before a day is watched: until then one burst looks like a rare model
THIN = 2e-7  # cold starts per MB·s (0.74 per GB·h) that holding a model must be expected to save, or it is thin


def density(history: ArrivalHistory, info: ModelInfo, bursts_per_second: float) -> float:
    """Cold starts per second per MB that not keeping the model would cost, at ``bursts_per_second``.

    A missed burst costs its first request and those that arrive while the model loads."""
    during_load = min(info.load_seconds * history.in_burst_rate(), max(history.burst_size() - 1.0, 0.0))
    return bursts_per_second * (1.0 + during_load) / info.size_mb


def bursting_mb(
    histories: Iterable[tuple[str, ArrivalHistory]],
    info: Callable[[str], ModelInfo],
    now: float,
    clumped: float,
    windowed: Mapping[str, float],
) -> float:
    """The memory the bursts of models with ``clumped`` requests per burst or more hold on average: what
    their loads on demand need beside the resident set. ``windowed`` gives the rate of bursts of models that
    keep a daily window (:class:`~modelserve.prewarm.timeofday.DailyWindow`), none outside it.

    Too little of it and a burst's load evicts a model in the middle of its own burst, which is then cold
    again at its next request: the thrash that makes a static split worse than LRU for bursty traffic."""
    total = 0.0
    for model, history in histories:
        rate = history.in_burst_rate()
        if rate > 0.0 and history.burst_size() >= clumped:
            model_info = info(model)
            bursts = windowed[model] if model in windowed else history.activation_rate(now)
            busy = bursts * (history.burst_size() / rate + model_info.load_seconds)
            total += model_info.size_mb * min(busy, 1.0)
    return total


def choose(
    histories: Iterable[tuple[str, ArrivalHistory]], info: Callable[[str], ModelInfo], now: float, capacity_mb: float
) -> dict[str, float]:
    """The densest models that fit in ``capacity_mb`` together, with their densities, by their bursts per
    second around this time of day."""
    return fill(((m, h, h.activation_rate(now)) for m, h in histories), info, capacity_mb)


def fill(
    rated: Iterable[tuple[str, ArrivalHistory, float]], info: Callable[[str], ModelInfo], capacity_mb: float
) -> dict[str, float]:
    """The densest of ``(model, history, bursts per second)`` that fit in ``capacity_mb``, with densities."""
    return _fill_ranked(
        sorted(((density(h, info(m), rate), m) for m, h, rate in rated), reverse=True), info, capacity_mb
    )


def _fill_ranked(
    ranked: list[tuple[float, str]], info: Callable[[str], ModelInfo], capacity_mb: float
) -> dict[str, float]:
    """The first of ``(density, model)``, densest first, that fit in ``capacity_mb``."""
    chosen: dict[str, float] = {}
    room = capacity_mb
    for value, model in ranked:
        size = info(model).size_mb
        if value > 0.0 and size <= room:
            chosen[model] = value
            room -= size
    return chosen


def keep_alive_mb(
    rated: Iterable[tuple[str, ArrivalHistory, float]], info: Callable[[str], ModelInfo], keep: float
) -> float:
    """What a keep-alive of ``keep`` seconds after each burst holds of these models on average.

    Bursts starting at random at rate ``r`` leave a gap longer than ``keep`` with chance ``exp(-r keep)``,
    so the keep-alive holds a model ``1 - exp(-r keep)`` of the time, and keeps warm that same share of its
    bursts: for memoryless arrivals, memory-time buys the same share of any model's bursts. Spent on the
    densest models instead of on every one, the same memory keeps more bursts warm."""
    return sum(info(m).size_mb * (1.0 - math.exp(-rate * keep)) for m, _, rate in rated)


class Residency(NamedTuple):
    """The resident set as chosen, and how the models left out of it are kept."""

    members: dict[str, float]  # model -> density, the densest first
    sparse: set[str]  # fewer than one burst per RESIDENT_REACH: no keep-alive past a burst
    thin: set[str]  # not worth their memory at this hour (density at most THIN): no keep-alive past a burst


def members(
    unplanned: Iterable[tuple[str, ArrivalHistory]],
    info: Callable[[str], ModelInfo],
    now: float,
    watched: float,
    capacity_mb: float,
    windowed: Mapping[str, float],
) -> Residency:
    """The resident set within ``capacity_mb``, with the sparse and the thin models, for a policy that has
    watched requests for ``watched`` seconds.

    A model that keeps a daily window competes by the rate ``windowed`` gives it now: its window's within it
    (and a little before), none outside, so it holds memory in its working hours only. Another of at least one
    burst per ``RESIDENT_REACH`` over that time (or any, in the first ``SPARSE_AFTER``) competes by its rate at
    this time of day (:func:`choose`). The others are sparse: they get no keep-alive past their burst, and the
    room left holds the densest of them, as much as ``SPARSE_KEEP`` keep-alives would hold of them all
    (:func:`keep_alive_mb`), rated from the first request seen plus ``SPARSE_PRIOR``.

    A model whose bursts start at random saves ``density`` cold starts per MB and second held, whenever it is
    held: by the resident set or by a keep-alive, now or at night. One expected to save no more than ``THIN``
    is thin: neither a member nor kept past its burst, since its memory-time buys less than the densest
    models' (the idle-memory target is a budget of memory-time). Sparse models count as thin only when their
    requests come in bursts: holding single requests a day apart is what the sparse room rations already,
    and flooring it cost the rare family its fourth version's gains (0.41x lru became 0.60-0.67x)."""
    span = max(watched, SPAN_FLOOR)
    frequent: list[tuple[str, ArrivalHistory, float]] = []
    sparse: list[tuple[str, ArrivalHistory]] = []
    for model, history in unplanned:
        if model in windowed:
            frequent.append((model, history, windowed[model]))
        elif watched < SPARSE_AFTER or history.activation_count / span >= 1.0 / RESIDENT_REACH:
            frequent.append((model, history, history.activation_rate(now)))
        else:
            sparse.append((model, history))
    rated = [(m, h, h.activation_count / (span + SPARSE_PRIOR)) for m, h in sparse]
    ranked = sorted(((density(h, info(m), rate), m) for m, h, rate in frequent), reverse=True)
    thin = {m for value, m in ranked if value <= THIN}
    thin |= {m for m, h, rate in rated if h.burst_size() >= CLUMPED and density(h, info(m), rate) <= THIN}
    resident = _fill_ranked([(value, m) for value, m in ranked if value > THIN], info, capacity_mb)
    room = capacity_mb - sum(info(m).size_mb for m in resident)
    allowed = min(room, keep_alive_mb(rated, info, SPARSE_KEEP))
    resident |= fill([x for x in rated if x[0] not in thin], info, allowed)
    return Residency(resident, {m for m, _ in sparse}, thin)


def scheduled_mb(
    histories: Iterable[tuple[str, ArrivalHistory]], info: Callable[[str], ModelInfo], lead: float
) -> float:
    """The memory models on a schedule hold on average: loading, then waiting out their jitter and ``lead``."""
    total = 0.0
    for model, history in histories:
        schedule = history.schedule or history.burst_schedule
        if schedule is not None:
            model_info = info(model)
            held = model_info.load_seconds + 2 * schedule.jitter + lead
            total += model_info.size_mb * min(held / schedule.period, 1.0)
    return total

"""When in the day and week ``predictive`` expects a model: the quarter hours whose past requests say one is
due, read from a model's :class:`~modelserve.prewarm.patterns.ArrivalHistory`."""

from __future__ import annotations

import math

from modelserve.prewarm import reasons
from modelserve.prewarm.patterns import SLOT_SECONDS, WEEK_SLOTS, ArrivalHistory
from modelserve.prewarm.reasons import Why

ACTIVE_SLOT = 1.0  # requests expected in a quarter hour for the time of day to pre-load a model
SPARSE_DAILY = 2.0  # requests a day up to which a model's time of day is read across neighbouring slots


def slot_why(history: ArrivalHistory, start: float) -> Why | None:
    """Why the time of day and week expects the model of ``history`` in the quarter hour at ``start``; None
    when it does not, or a schedule already plans its loads."""
    if history.schedule is not None:
        return None
    expected = history.expected_in(start, SLOT_SECONDS)
    if expected >= ACTIVE_SLOT:
        return (reasons.slot_expected, (start, expected))
    if history.daily_near(start, SPARSE_DAILY):
        return (reasons.daily_job, (start,))
    return None


def next_slot(history: ArrivalHistory, now: float) -> float | None:
    """The start of the next quarter hour, within a week, the time of day expects the model in, or None.

    A pass over a week of slots: for an operator's question, not for every request."""
    first = (math.floor(now / SLOT_SECONDS) + 1) * SLOT_SECONDS
    for slot in range(WEEK_SLOTS):
        start = first + slot * SLOT_SECONDS
        if slot_why(history, start) is not None:
            return start
    return None

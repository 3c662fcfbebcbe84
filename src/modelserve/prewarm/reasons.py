"""Why ``predictive`` loads or evicts a model, in an operator's words and with the numbers behind it, and
the decision in the making (:class:`Draft`) that carries each reason with its model.

The policy notes a reason each time it plans something, which is on nearly every request of a replay; most
of those plans are replaced before they act. So a reason is kept as a formatter and its numbers (:data:`Why`)
and written out only when a decision carries it or an operator asks (:func:`text`). Times are absolute and
written relative to the moment the reason is read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from modelserve.prewarm.policy import Decision
from modelserve.prewarm.residency import THIN
from modelserve.prewarm.timers import Action, Timers

Why = tuple[Callable[..., str], tuple[Any, ...]]  # a formatter taking (now, *numbers), and the numbers


def text(why: Why, now: float) -> str:
    """The reason as an operator reads it at ``now``."""
    formatter, numbers = why
    return formatter(now, *numbers)


def clock(at: float, *, weekday: bool = False) -> str:
    """``at`` as a time of day (and day of the week) in UTC, as the policy reads Unix times."""
    return time.strftime("%a %H:%M UTC" if weekday else "%H:%M UTC", time.gmtime(at))


def schedule_due(now: float, due: float, period: float, jitter: float) -> str:
    """A pre-load for a request on a schedule."""
    return f"schedule: next request due in {due - now:.0f} s (period {period:.0f} s ± {jitter:.0f} s)"


def schedule_between(now: float, due: float, period: float, jitter: float, preload: float) -> str:
    """An unload between two requests on a schedule."""
    return (
        f"schedule: next request due in {due - now:.0f} s (period {period:.0f} s ± {jitter:.0f} s); "
        f"unloaded until its pre-load in {preload - now:.0f} s"
    )


def schedule_missed(now: float, due: float, period: float, jitter: float) -> str:
    """An unload after a request due on a schedule did not come, waiting for the next one."""
    return (
        f"schedule: the request due did not come; the next is due in {due - now:.0f} s "
        f"(period {period:.0f} s ± {jitter:.0f} s)"
    )


def schedule_window(now: float, end: float, period: float, jitter: float) -> str:
    """An unload planned for the end of the window a scheduled request is due in."""
    return (
        f"schedule: the window its request was due in (period {period:.0f} s ± {jitter:.0f} s) "
        f"ends in {end - now:.0f} s"
    )


def schedule_over(now: float, last: float, period: float) -> str:
    """An unload of a model whose schedule stopped."""
    return f"schedule: no request for {now - last:.0f} s ({(now - last) / period:.1f} periods): no longer expected"


def bursts_due(now: float, due: float, period: float, jitter: float) -> str:
    """A pre-load for a burst on a schedule."""
    return f"bursts on a schedule: next burst due in {due - now:.0f} s (period {period:.0f} s ± {jitter:.0f} s)"


def burst_over(now: float, due: float, period: float, jitter: float) -> str:
    """An unload after a burst whose successor is due on a schedule."""
    return (
        f"bursts on a schedule: burst over, the next is due in {due - now:.0f} s "
        f"(period {period:.0f} s ± {jitter:.0f} s)"
    )


def bursts_window(now: float, end: float, period: float, jitter: float) -> str:
    """An unload planned for the end of the window a burst on a schedule is due in."""
    return (
        f"bursts on a schedule: the window its next burst is due in (period {period:.0f} s ± {jitter:.0f} s) "
        f"ends in {end - now:.0f} s"
    )


def keep_alive(now: float, keep: float) -> str:
    """An unload when a keep-alive runs out."""
    return f"keep-alive of {keep:.0f} s ran out"


def stretched(now: float, keep: float) -> str:
    """An unload when a keep-alive stretched while memory was roomy runs out."""
    return f"keep-alive stretched to the 99th percentile of its gaps ({keep:.0f} s) while memory was roomy ran out"


def announced(now: float) -> str:
    """An unload right after a burst of a model its leaders announce."""
    return "follower: burst over; its leader's next burst loads it again in time"


def thin(now: float) -> str:
    """An unload right after a burst of a model not worth its memory at this hour."""
    return (
        f"burst over; held on, it would save fewer than {THIN * 3600 * 1024:.2f} cold starts per GB·h at this "
        "hour: not worth its memory"
    )


def sparse(now: float, gap: float) -> str:
    """An unload right after a burst of a sparse model left out of the resident set."""
    return (
        f"sparse (a burst every {gap / 3600.0:.1f} h): burst over; "
        "the memory a keep-alive would hold goes to the densest sparse models"
    )


def follows(now: float, leader: str, lag_min: float, lag_max: float) -> str:
    """A pre-load of a follower when its leader's burst starts."""
    return f"follows {leader}'s burst (lag {lag_min:.0f}-{lag_max:.0f} s)"


def followed(now: float, leader: str, lag_max: float) -> str:
    """An unload of a follower once its usual lag after the leader has passed."""
    return f"follows {leader}'s burst: its longest lag ({lag_max:.0f} s) passed"


def slot_expected(now: float, start: float, requests: float) -> str:
    """A pre-load for a quarter hour the time of day expects requests in."""
    return f"time of day: {requests:.1f} requests expected in the quarter hour from {clock(start)}"


def daily_job(now: float, start: float) -> str:
    """A pre-load around the hour a model of a request or two a day was asked for on past days."""
    return f"daily job due around {clock(start)}, as on past days"


def slot_over(now: float, start: float) -> str:
    """An unload once the quarter hour the time of day kept a model for is over."""
    return f"time of day: the quarter hour from {clock(start)} it was expected in is over"


def resident(now: float, rank: int, members: int) -> str:
    """A load (or keep) of a resident set member."""
    return f"resident set: {_ordinal(rank)} of {members} by bursts per MB at this time of day"


def window_member(now: float, start: float, length: float, rate: float, rank: int, members: int) -> str:
    """A load (or keep) of a resident set member for its daily window."""
    when = f"opens in {(start - now) / 60:.0f} min" if start > now else "open"
    return (
        f"daily window {clock(start)}-{clock(start + length)} {when}: {rate * 3600:.1f} bursts an hour expected; "
        f"{_ordinal(rank)} of {members} by bursts per MB"
    )


def window_over(now: float, start: float, length: float) -> str:
    """An unload of a model whose daily window is over, or did not open today."""
    return f"daily window {clock(start)}-{clock(start + length)}: not expected now (closed, or silent since it opened)"


def window_closes(now: float, close: float) -> str:
    """An unload of a model whose keep-alive would outlast its daily window."""
    return f"daily window over at {clock(close)}: its keep-alive ended with it"


def left_resident(now: float) -> str:
    """An unload of a model that left the resident set."""
    return "resident set: no longer among the densest by bursts per MB"


def displaced(now: float, by: str, worth: float, its: float) -> str:
    """An eviction to make room for a pre-load worth more than the models it displaces."""
    return f"displaced by the pre-load of {by} (worth {worth:.2g} against its {its:.2g}: requests soon * load s)"


def displaced_by_member(now: float, by: str) -> str:
    """An eviction to make room for a model joining the resident set."""
    return f"displaced by {by}, which joined the resident set"


def after_load(now: float, why: Why) -> str:
    """An unload ordered while the model was loading, carried out once it is READY."""
    return f"{text(why, now)} (unloaded once its load ended)"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Draft:
    """A decision in the making: what to load and to evict, and why each."""

    __slots__ = ("evict", "load", "why")

    def __init__(self) -> None:
        self.load: list[str] = []
        self.evict: list[str] = []
        self.why: dict[str, str] = {}

    def add(self, model: str, reason: str) -> None:
        """Load ``model`` ahead of demand."""
        self.load.append(model)
        self.why[model] = reason

    def drop(self, model: str, reason: str) -> None:
        """Evict ``model``."""
        self.evict.append(model)
        self.why[model] = reason

    def decision(self, wake_at: float | None) -> Decision:
        """The decision as the holder of memory reads it."""
        return Decision(tuple(self.load), tuple(self.evict), wake_at, self.why)


class Plans(Timers):
    """Per-model load and unload timers, each with the reason of what set it."""

    def __init__(self) -> None:
        super().__init__()
        self._why: dict[Action, dict[str, Why]] = {Action.LOAD: {}, Action.UNLOAD: {}}

    def plan(self, model: str, action: Action, at: float, why: Why) -> None:
        """Fire ``action`` for ``model`` at ``at``, for ``why``, replacing any earlier plan for the pair."""
        self.set(model, action, at)
        self._why[action][model] = why

    def note(self, model: str, action: Action, why: Why) -> None:
        """Give the ``action`` of ``model`` that just fired another reason, before it is carried out."""
        self._why[action][model] = why

    def keep_until(self, model: str, until: float, why: Why) -> None:
        """Put off ``model``'s unload to ``until`` (for ``why``) unless it is planned later already."""
        planned = self.at(model, Action.UNLOAD)
        if planned is None or planned < until:
            self.plan(model, Action.UNLOAD, until, why)

    def loads_at(self, model: str) -> float:
        """When ``model`` is planned to load; infinity when it is not."""
        planned = self.at(model, Action.LOAD)
        return math.inf if planned is None else planned

    def why(self, model: str, action: Action) -> Why:
        """Why ``action`` was planned for ``model`` (as last planned, pending or just fired)."""
        return self._why[action].get(model, UNSAID)


UNSAID: Why = (keep_alive, (600.0,))  # a timer planned without a reason: none is, but a lookup needs one

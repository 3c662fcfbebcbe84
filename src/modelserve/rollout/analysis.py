"""What a rollout decides each interval, as plain functions of counts: the traffic split, and the check
that compares the new version's window with the stable one's (Flagger's analysis, one step at a time).

The split is a weighted round robin, not a coin: of any 100 consecutive requests naming no version,
exactly ``weight`` go to the new version, spread evenly, so a test (and an operator reading the counts)
sees the share it asked for. A check is judged once the new version has answered ``min_samples``
requests since the last judged check; until then the step waits. Errors do not wait that long: when
the failures already counted would breach the error rate even if every missing sample succeeded, the
check breaches at once.

Latency is judged at the p99 and at the median, each as the ratio of the new version's to the stable
one's. Over the few hundred requests of a short window a p99 is nearly the largest value, which one
stalled request sets, on either version: a window's percentile is only an estimate. So a ratio
breaches only beyond the estimates' 95 % confidence (distribution-free, from order statistics): the
lower bound of the new version's percentile above ``max_latency_ratio`` times the upper bound of the
stable one's. With thousands of requests a window the bounds close in on the percentiles; with a
hundred, a stall on the new version passes, while a version slower in every request still breaches
at the median, which no stall moves. A breach rolls back at once unless ``latency_windows`` asks for
several windows in a row; a failed request is no estimate, and one error-rate breach always does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class Split:
    """Chooses the version of each request that names none: ``weight`` % the new one, the rest the stable."""

    def __init__(self, stable: int, new: int, weight: int) -> None:
        self.stable, self.new, self.weight = stable, new, weight
        self._count = 0

    def choose(self) -> int:
        """The next request's version. ``count * weight mod 100`` runs through every residue below 100
        alike, so ``weight`` of each 100 consecutive requests fall below ``weight``."""
        self._count = count = (self._count + 1) % 100
        return self.new if (count * self.weight) % 100 < self.weight else self.stable


@dataclass(frozen=True)
class Thresholds:
    """What a rollout tolerates from its new version in each check."""

    max_error_rate: float  # a fraction of its requests that failed in the model (runtime errors)
    max_latency_ratio: float  # its p99 latency over the stable version's
    min_samples: int  # requests it must have answered before a check is judged
    latency_windows: int = 1  # consecutive windows whose latency must breach before a rollback


@dataclass
class Window:
    """What one version did since the last judged check."""

    requests: int = 0  # answered, successfully or not
    failures: int = 0  # failed in the model itself (``ModelStats.model_failures``)
    latencies: list[int] = field(default_factory=list)  # nanoseconds of the successful ones

    @property
    def error_rate(self) -> float:
        """Failures over requests; 0 with no requests."""
        return self.failures / self.requests if self.requests else 0.0

    def percentile_s(self, q: float) -> float | None:
        """The ``q``-th percentile of the successful requests' latency in seconds; None without any."""
        if not self.latencies:
            return None
        return float(np.percentile(np.asarray(self.latencies, dtype=np.int64), q)) / 1e9

    def bounds_s(self, q: float) -> tuple[float, float] | None:
        """A 95 % confidence interval of the ``q``-th percentile in seconds: the order statistics whose
        ranks bound a binomial(n, q/100) count (normal approximation); None without latencies."""
        n = len(self.latencies)
        if not n:
            return None
        ordered = np.sort(np.asarray(self.latencies, dtype=np.int64))
        p = q / 100
        spread = Z95 * math.sqrt(n * p * (1 - p))
        low = min(n - 1, max(0, math.floor(n * p - spread) - 1))
        high = min(n - 1, max(0, math.ceil(n * p + spread) - 1))
        return float(ordered[low]) / 1e9, float(ordered[high]) / 1e9


Z95 = 1.96  # the standard normal's 97.5th percentile: a two-sided 95 % interval


class Outcome(StrEnum):
    """What a check concluded."""

    PASS = "pass"  # the step is done: on to the next share, or promotion after the last
    BREACH = "breach"  # roll back now
    HOLD = "hold"  # the p99 breached, not yet in enough windows in a row: a fresh window decides
    WAIT = "wait"  # too few requests yet: the window goes on


@dataclass(frozen=True)
class Verdict:
    """A check's outcome, why, and its figures as the API and the logs show them."""

    outcome: Outcome
    reason: str
    figures: dict[str, Any]
    cause: str = ""  # a breach's: error_rate, latency or not_serving


def judge(
    new: Window, stable: Window, baseline_p99_s: float | None, limits: Thresholds, latency_strikes: int = 0
) -> Verdict:
    """Compare the new version's window with the stable one's (or, when the stable version had too few
    requests in it, with ``baseline_p99_s``, its p99 in the last window that had enough);
    ``latency_strikes`` is how many windows just before this one breached the latency ratio."""
    new_p99, new_p50 = new.percentile_s(99), new.percentile_s(50)
    stable_p99, stable_p50 = stable.percentile_s(99), stable.percentile_s(50)
    stable_bounds = {99: stable.bounds_s(99), 50: stable.bounds_s(50)}
    if stable_p99 is None or len(stable.latencies) < limits.min_samples:
        stable_p99, stable_p50 = baseline_p99_s, None
        stable_bounds = {99: None if baseline_p99_s is None else (baseline_p99_s, baseline_p99_s), 50: None}
    figures: dict[str, Any] = {
        "new_requests": new.requests,
        "new_failures": new.failures,
        "new_error_rate": round(new.error_rate, 6),
        "new_p99_ms": _ms(new_p99),
        "new_p50_ms": _ms(new_p50),
        "stable_requests": stable.requests,
        "stable_failures": stable.failures,
        "stable_p99_ms": _ms(stable_p99),
        "stable_p50_ms": _ms(stable_p50),
    }
    enough = new.requests >= limits.min_samples
    if new.failures / max(new.requests, limits.min_samples) > limits.max_error_rate:
        rate = new.failures / max(new.requests, 1)
        return Verdict(
            Outcome.BREACH,
            f"error rate {rate:.2%} ({new.failures} of {new.requests} requests failed in the model) "
            f"is above the maximum {limits.max_error_rate:.2%}",
            figures,
            "error_rate",
        )
    if not enough:
        return Verdict(Outcome.WAIT, f"{new.requests} of {limits.min_samples} requests needed for a check", figures)
    breaches = []
    for q, name, key, ours, theirs in (
        (99, "p99", "latency_ratio", new_p99, stable_p99),
        (50, "median", "median_ratio", new_p50, stable_p50),
    ):
        if ours is None or not theirs:
            continue
        figures[key] = round(ours / theirs, 3)
        low, high = new.bounds_s(q), stable_bounds[q]
        assert low is not None
        if high and low[0] / high[1] > limits.max_latency_ratio:
            breaches.append(
                f"{name} latency {ours * 1e3:.2f} ms is {ours / theirs:.2f}x the stable version's "
                f"{theirs * 1e3:.2f} ms (at least {low[0] / high[1]:.2f}x within 95 % confidence)"
            )
    if breaches:
        reason = f"{' and '.join(breaches)}, above the maximum ratio {limits.max_latency_ratio:g}"
        if latency_strikes + 1 < limits.latency_windows:
            windows = f"{latency_strikes + 1} of {limits.latency_windows} windows in a row"
            return Verdict(Outcome.HOLD, f"{reason} ({windows} roll it back)", figures, "latency")
        return Verdict(Outcome.BREACH, reason, figures, "latency")
    return Verdict(Outcome.PASS, "within thresholds", figures)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)

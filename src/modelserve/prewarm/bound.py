"""The fewest cold starts any policy can expect on a trace whose arrival process is known: what tells a
target out of reach from a target missed.

A request that starts at random (a Poisson process of rate ``λ(t)``: the past says nothing of when) finds
its model READY only if the policy happened to hold it then. Whatever the policy, with ``x(t)`` the chance
it holds the model at ``t``, the cold starts it can expect from that model are ``∫ λ(t) w(t) (1 - x(t)) dt``,
where ``w`` counts the requests one cold start stands for. No policy holds more than the budget at any
instant, so minimising over every ``x`` that respects the budget is a fractional knapsack at each instant,
filled by ``λ w / size``: a lower bound for every policy that does not see the future, even one told the
true rates. Two versions, and the larger is the bound:

- **held** (``x``: READY or loading): a cold start that finds the model neither counts its first request,
  those of its burst that arrive while it loads, and the fresh starts in that time;
- **idle-limited** (``x``: READY): its first request only, but the READY memory-time summed over the trace
  is also capped, as the targets cap ``predictive``'s idle memory at hybrid-histogram's. The cap is a
  price on memory-time (a Lagrange multiplier), found by bisection.

Arrivals a policy can foresee (a schedule, a leader) are taken to cost neither memory nor cold starts,
which only lowers the bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from modelserve.prewarm.generators import Unforeseeable
from modelserve.prewarm.policy import ModelInfo

STEP = 300.0  # seconds per instant of the knapsack; the rates of the trace families move over hours
BISECTIONS = 60


@dataclass(frozen=True, slots=True)
class Bound:
    """Expected cold starts no policy can go below, and which version of the bound gave them."""

    cold_starts: float
    held: float
    idle_limited: float | None


def burst_extra(burst: float, spacing: float, load_seconds: float) -> float:
    """Requests of a burst, after its first, expected while the model loads.

    Each later request comes ``spacing`` seconds after the one before on average (exponential gaps) and the
    burst ends after each request with chance ``1 / burst``. The ``k``-th comes in time with chance
    ``(1 - 1/burst)^k P(N >= k)``, ``N`` Poisson of mean ``load_seconds / spacing``; the sum is closed-form."""
    if burst <= 1.0:
        return 0.0
    return (burst - 1.0) * (1.0 - float(np.exp(-load_seconds / spacing / burst)))


def cold_start_bound(
    truths: Mapping[str, Unforeseeable],
    catalogue: Mapping[str, ModelInfo],
    budget_mb: float,
    seconds: float,
    idle_mb_seconds: float | None = None,
) -> Bound:
    """The bound over ``[0, seconds)`` for the models of ``truths``, under ``budget_mb`` and, if given, at
    most ``idle_mb_seconds`` of READY memory-time."""
    names = list(truths)
    if not names:
        return Bound(0.0, 0.0, None if idle_mb_seconds is None else 0.0)
    times = np.arange(0.0, seconds, STEP) + STEP / 2
    rates = np.array([truths[m].rate(times) for m in names])  # models x instants
    sizes = np.array([catalogue[m].size_mb for m in names])
    loads = np.array([catalogue[m].load_seconds for m in names])
    extra = np.array([burst_extra(truths[m].burst, truths[m].spacing, catalogue[m].load_seconds) for m in names])
    weights = 1.0 + extra[:, None] + rates * loads[:, None]
    held = _knapsack(rates * weights, sizes, budget_mb, 0.0)[0]
    if idle_mb_seconds is None:
        return Bound(held, held, None)
    low, high = 0.0, float((rates / sizes[:, None]).max())
    cold, memory = _knapsack(rates, sizes, budget_mb, low)
    if memory > idle_mb_seconds:
        for _ in range(BISECTIONS):
            price = (low + high) / 2
            if _knapsack(rates, sizes, budget_mb, price)[1] > idle_mb_seconds:
                low = price
            else:
                high = price
        cold = _knapsack(rates, sizes, budget_mb, high)[0]
    return Bound(max(held, cold), held, cold)


def _knapsack(value: np.ndarray, sizes: np.ndarray, capacity: float, price: float) -> tuple[float, float]:
    """Expected cold starts left and memory-time used when, at each instant, models are held densest first
    up to ``capacity`` MB, and only while their density (value per MB) exceeds ``price``."""
    density = value / sizes[:, None]
    order = np.argsort(-density, axis=0)
    ranked_sizes = sizes[order]
    before = np.cumsum(ranked_sizes, axis=0) - ranked_sizes
    share = np.clip((capacity - before) / ranked_sizes, 0.0, 1.0)
    share = share * (np.take_along_axis(density, order, axis=0) > price)
    ranked_value = np.take_along_axis(value, order, axis=0)
    left = float(((1.0 - share) * ranked_value).sum() * STEP)
    return left, float((share * ranked_sizes).sum() * STEP)

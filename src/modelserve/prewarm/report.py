"""What the pre-warming policy is doing, as plain data: ``GET /v2/prewarm``, ``modelserve prewarm plan`` and
the web console read it.

An operator trusts a policy that shows its hand: what it did last and why (and what became of it), what it
will do next and when, what it has read each model's traffic as, and what it has been worth against lru on
the same requests (``shadow.LRUShadow``) with the pre-loads it made for nothing. Everything here reads the
policy and the pre-warmer; nothing changes them.
"""

from __future__ import annotations

from collections.abc import Iterable

from typing_extensions import TypedDict

from modelserve.prewarm.live import LivePrewarmer
from modelserve.prewarm.policy import GPU, Forecast, Pattern, Step

PLANNED_SHOWN = 50  # planned steps in a report, soonest first: enough for the next hours of most plans


class PlannedStep(TypedDict):
    """A load or an eviction the policy intends."""

    action: str  # load or evict
    model: str
    at: float  # Unix time
    in_seconds: float
    reason: str


class TakenStep(PlannedStep):
    """A load or an eviction the policy decided, as carried out (``in_seconds`` is then negative)."""

    outcome: str  # done, or skipped / failed and why


class ModelOutlook(TypedDict):
    """A model as the policy reads it, and what the policy has been worth on it since the server started."""

    model: str
    loaded: bool  # READY or loading now
    device: str  # cpu, or gpu for a model whose last load held GPU memory (GPU_MEMORY_FRACTION)
    size_mb: float  # what the policy plans with: the footprint on its device at its last load (a guess before any)
    load_seconds: float  # likewise, its last load's time, warmup included
    pattern: str  # schedule, burst, daily window, follower, none
    next_arrival: float | None  # Unix time of the next request expected at the earliest; None: nothing says
    in_seconds: float | None
    cold_starts: int  # requests that waited for a load
    lru_cold_starts: int  # what an lru cache of the same budget would have had on the same requests
    cold_starts_avoided: int  # lru_cold_starts less cold_starts: negative where the policy did worse
    unused_loads: int  # pre-loads no request used before the model went again


class PrewarmReport(TypedDict):
    """Everything ``GET /v2/prewarm`` answers."""

    policy: str  # lru, hybrid-histogram, predictive; none when PREWARM_POLICY is none
    learning: bool  # still learning from the traffic history: nothing planned yet, requests counted
    now: float  # Unix time the report was made
    budget_mb: float
    used_mb: float
    gpu_budget_mb: float  # 0 without GPU_MEMORY_FRACTION on a GPU host
    gpu_used_mb: float
    cold_starts: int
    lru_cold_starts: int
    cold_starts_avoided: int
    unused_loads: int
    decisions: list[TakenStep]  # the latest first
    planned: list[PlannedStep]  # the soonest first
    models: list[ModelOutlook]  # the soonest expected first, then by name


def report(prewarmer: LivePrewarmer | None, models: Iterable[str], now: float) -> PrewarmReport:
    """The report at ``now`` on ``models`` (those the server knows of) and any the policy has seen requests of;
    with no pre-warmer, an empty report of policy ``none``."""
    if prewarmer is None:
        return PrewarmReport(
            policy="none",
            learning=False,
            now=now,
            budget_mb=0.0,
            used_mb=0.0,
            gpu_budget_mb=0.0,
            gpu_used_mb=0.0,
            cold_starts=0,
            lru_cold_starts=0,
            cold_starts_avoided=0,
            unused_loads=0,
            decisions=[],
            planned=[],
            models=[],
        )
    policy, shadow = prewarmer.policy, prewarmer.shadow
    names = set(models) | set(prewarmer.cold_starts) | set(shadow.cold_starts)
    resident = prewarmer.resident()
    outlooks = []
    learning = prewarmer.learning  # its policy is being taught the history in a thread: not read now
    for name in names:
        forecast = Forecast(name, Pattern.NONE, None) if learning else policy.forecast(name, now)
        at, info = forecast.next_arrival, prewarmer.info(name)
        outlooks.append(
            ModelOutlook(
                model=name,
                loaded=name in resident,
                device=info.device,
                size_mb=info.size_mb,
                load_seconds=info.load_seconds,
                pattern=forecast.pattern.value,
                next_arrival=at,
                in_seconds=None if at is None else at - now,
                cold_starts=prewarmer.cold_starts[name],
                lru_cold_starts=shadow.cold_starts[name],
                cold_starts_avoided=prewarmer.avoided(name),
                unused_loads=prewarmer.unused_loads[name],
            )
        )
    outlooks.sort(key=lambda o: (o["next_arrival"] is None, o["next_arrival"] or 0.0, o["model"]))
    taken = [TakenStep(**_row(done.step, now), outcome=done.outcome) for done in reversed(prewarmer.steps)]
    planned = [] if learning else [_row(step, now) for step in policy.planned(now, prewarmer)[:PLANNED_SHOWN]]
    cold, lru_cold = sum(prewarmer.cold_starts.values()), sum(shadow.cold_starts.values())
    return PrewarmReport(
        policy=policy.name,
        learning=learning,
        now=now,
        budget_mb=prewarmer.budget_mb,
        used_mb=prewarmer.used_mb,
        gpu_budget_mb=prewarmer.budget_of(GPU),
        gpu_used_mb=prewarmer.used_of(GPU),
        cold_starts=cold,
        lru_cold_starts=lru_cold,
        cold_starts_avoided=lru_cold - cold,
        unused_loads=sum(prewarmer.unused_loads.values()),
        decisions=taken,
        planned=planned,
        models=outlooks,
    )


def _row(step: Step, now: float) -> PlannedStep:
    return PlannedStep(action=step.action, model=step.model, at=step.at, in_seconds=step.at - now, reason=step.reason)

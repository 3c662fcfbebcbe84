"""Which models follow which: B is A's follower when B is requested within a short window after A's bursts
start, often enough to pre-load B the moment A starts (pipelines, feature then ranking models, ...)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 120.0  # B counts as following A when requested this soon after A's burst started
MIN_SUPPORT = 3
MIN_CONFIDENCE = 0.5
MIN_LIFT = 2.0
ANNOUNCED = 0.75  # a follower whose leaders announce this share of its bursts needs no keep-alive of its own
ANNOUNCED_EVERY = 600.0  # seconds for which whether a model's leaders announce it is taken as known


@dataclass(slots=True)
class _Pair:
    count: int = 0
    lag_min: float = float("inf")
    lag_max: float = 0.0


@dataclass(frozen=True, slots=True)
class Follower:
    """A model that tends to be requested between ``lag_min`` and ``lag_max`` seconds after its leader."""

    model: str
    confidence: float
    lag_min: float
    lag_max: float


class FollowerTable:
    """Counts, for each leader's burst start, which other models were requested within ``WINDOW``."""

    def __init__(self) -> None:
        self._starts: dict[str, int] = {}
        self._pairs: dict[str, dict[str, _Pair]] = {}
        self._leaders: dict[str, list[str]] = {}  # for each model, the models it followed MIN_SUPPORT times
        self._recent: deque[tuple[float, str, set[str]]] = deque()  # open windows: (start, leader, seen)
        self._announced: dict[str, bool] = {}  # answers of :meth:`announced`, until _announced_until
        self._announced_until = -math.inf

    def observe(self, model: str, now: float, *, activation: bool) -> None:
        """Record a request; ``activation`` when it starts a burst of ``model``."""
        recent = self._recent
        while recent and now - recent[0][0] > WINDOW:
            recent.popleft()
        for start, leader, seen in recent:
            if leader != model and model not in seen:
                seen.add(model)
                pair = self._pairs.setdefault(leader, {}).get(model)
                if pair is None:
                    pair = self._pairs[leader][model] = _Pair()
                pair.count += 1
                if pair.count == MIN_SUPPORT:
                    self._leaders.setdefault(model, []).append(leader)
                lag = now - start
                pair.lag_min = min(pair.lag_min, lag)
                pair.lag_max = max(pair.lag_max, lag)
        if activation:
            self._starts[model] = self._starts.get(model, 0) + 1
            recent.append((now, model, set()))

    def followers(self, leader: str, chance: Callable[[str], float]) -> list[Follower]:
        """Models that followed most of ``leader``'s bursts, with the lags seen.

        ``chance(model)`` is how likely a request for ``model`` is within ``WINDOW`` of any moment: a model
        requested all the time follows every leader by chance, so a follower must do it ``MIN_LIFT`` times as
        often as chance alone would."""
        starts = self._starts.get(leader, 0)
        floor = max(MIN_SUPPORT, starts * MIN_CONFIDENCE)  # checked first: ``chance`` costs more than a compare
        return [
            Follower(model, pair.count / starts, pair.lag_min, pair.lag_max)
            for model, pair in self._pairs.get(leader, {}).items()
            if pair.count >= floor and pair.count >= starts * MIN_LIFT * chance(model)
        ]

    def announced_share(self, model: str, chance: Callable[[str], float]) -> float:
        """The share of ``model``'s bursts that came after a burst of a leader it follows (see
        :meth:`followers`): how often the leader's start already announces ``model``'s next burst."""
        starts = self._starts.get(model, 0)
        if starts == 0:
            return 0.0
        best = 0
        share = max(MIN_CONFIDENCE, MIN_LIFT * chance(model))
        for leader in self._leaders.get(model, ()):
            count = self._pairs[leader][model].count
            if count > best and count >= self._starts.get(leader, 0) * share:
                best = count
        return best / starts

    def announced(self, model: str, chance: Callable[[str], float]) -> bool:
        """True when ``model``'s leaders announce at least ``ANNOUNCED`` of its bursts (:meth:`announced_share`).

        Remembered until :meth:`refresh` forgets it: the share moves slowly, and reading it is a pass over every
        model seen to precede this one often enough, which on busy traces is most of them."""
        known = self._announced.get(model)
        if known is None:
            known = self._announced[model] = self.announced_share(model, chance) >= ANNOUNCED
        return known

    def refresh(self, now: float) -> None:
        """Forget the answers of :meth:`announced` once ``ANNOUNCED_EVERY`` has passed since they were last
        forgotten."""
        if now >= self._announced_until:
            self._announced.clear()
            self._announced_until = now + ANNOUNCED_EVERY

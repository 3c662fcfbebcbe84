"""The contract between a pre-warming policy and whatever holds the models: the simulator here, the
``ModelManager`` of a live server later.

A policy is told what happens (an arrival, a finished load, an unload it did not order) and the passing of
time (``tick``), and answers with a :class:`Decision`: models to load ahead of demand, models to evict, and
when it next wants to be woken. It reads the cache through a :class:`CacheView` and never changes it
itself, so the holder stays the one owner of memory and can refuse what it cannot do.

Time is a float of seconds handed in by the caller and never read from a clock inside a policy, so the same
code replays a week of trace in seconds and runs live on ``time.monotonic()``.

Wiring it live: when a request needs a model that is not loaded, load it on demand, evicting in the order
``eviction_order`` gives until it fits; then call ``on_arrival``. Call ``on_loaded`` when a load turns
READY, ``on_unloaded`` when a load on demand evicted a model, and ``tick`` no later than the last decision's
``wake_at`` (a periodic timer of a second or so is enough). Apply a decision's ``evict`` first, skipping
models that are busy or not READY, then its ``load``, skipping models that do not fit in the budget: a policy
that wants room for a pre-load names the models to evict for it.

A policy also explains itself, for ``GET /v2/prewarm`` and ``modelserve prewarm plan``: each decision says
why it loads or evicts each model (``Decision.why``), ``planned`` lists the loads and evictions it intends
next, and ``forecast`` gives a model's expected next request and the pattern it was read from. These read
the policy's state and change nothing, so asking costs no decision.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal, Protocol

CPU, GPU = "cpu", "gpu"
DEVICES = (CPU, GPU)  # the memories a budget limits: the host's (MODEL_MEMORY_BUDGET_MB) and GPU 0's


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a policy knows of a model before it is used: what it costs to hold and to bring back, and
    where: a model on a GPU holds ``size_mb`` of GPU memory, which the GPU budget limits (its host memory
    is small beside it, and the host budget still checks it at load)."""

    name: str
    size_mb: float
    load_seconds: float
    device: str = CPU

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model needs a name")
        if self.device not in DEVICES:
            raise ValueError(f"model {self.name}: device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.size_mb <= 0:
            raise ValueError(f"model {self.name}: size_mb must be > 0, got {self.size_mb}")
        if self.load_seconds < 0:
            raise ValueError(f"model {self.name}: load_seconds must be >= 0, got {self.load_seconds}")


class CacheView(Protocol):
    """A read-only view of the models in memory, as the holder of the memory budget sees it now."""

    @property
    def budget_mb(self) -> float:
        """The host memory budget; loaded and loading models on the host together never exceed it."""
        ...

    @property
    def used_mb(self) -> float:
        """Host memory held by READY and loading models."""
        ...

    def budget_of(self, device: str) -> float:
        """The budget of ``device``'s memory (0 where there is none: no model of it can load)."""
        ...

    def used_of(self, device: str) -> float:
        """``device``'s memory held by READY and loading models."""
        ...

    def info(self, model: str) -> ModelInfo:
        """The size and load time of any model the holder can load."""
        ...

    def resident(self) -> Collection[str]:
        """Models that hold memory: READY or loading."""
        ...

    def is_ready(self, model: str) -> bool:
        """Loaded and able to serve at once."""
        ...

    def is_loading(self, model: str) -> bool:
        """Holding its memory, not yet able to serve."""
        ...

    def is_busy(self, model: str) -> bool:
        """Serving or about to serve a request: never evicted."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy asks for. An empty decision (the default) asks for nothing."""

    load: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()
    wake_at: float | None = None  # when to call ``tick`` next; None: no need before the next event
    why: dict[str, str] = field(default_factory=dict)  # model -> the reason it is loaded or evicted, for operators

    def __bool__(self) -> bool:
        return bool(self.load or self.evict or self.wake_at is not None)

    def reason(self, model: str) -> str:
        """Why ``model`` is in this decision, as an operator reads it."""
        return self.why.get(model, "no reason given")


NOTHING = Decision()


class Pattern(StrEnum):
    """What a policy has read a model's traffic as: what tells it when the next request comes."""

    SCHEDULE = "schedule"  # requests (or bursts of them) at a fixed period
    BURST = "burst"  # requests in bursts that start at random: kept through a burst and the usual gap after it
    DAILY_WINDOW = "daily window"  # requests within the same hours of the day (and days of the week)
    FOLLOWER = "follower"  # requests that follow another model's burst within a usual lag
    NONE = "none"  # nothing foresees it: kept or not by its rate alone


@dataclass(frozen=True, slots=True)
class Step:
    """A load or an eviction, planned or done, with its time and why."""

    action: Literal["load", "evict"]
    model: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Forecast:
    """A model's next request as a policy expects it, and the pattern that says so."""

    model: str
    pattern: Pattern
    next_arrival: float | None  # the earliest time a request is expected; None when nothing says when


def evictable(view: CacheView) -> list[str]:
    """Models the holder may evict now: READY and not busy."""
    return [m for m in view.resident() if view.is_ready(m) and not view.is_busy(m)]


def victims_for(
    view: CacheView, need_mb: float, order: Iterable[str], freed_mb: float = 0.0, device: str = CPU
) -> list[str] | None:
    """The first models of ``order`` on ``device`` whose eviction frees room there for ``need_mb`` more, or
    None if they cannot: a model on the other device frees nothing where it is needed.

    ``freed_mb`` is memory a decision in the making already frees there (models it evicts that ``order``
    omits)."""
    free = view.budget_of(device) - view.used_of(device) + freed_mb
    chosen: list[str] = []
    for model in order:
        if free >= need_mb:
            break
        info = view.info(model)
        if info.device == device:
            free += info.size_mb
            chosen.append(model)
    return chosen if free >= need_mb else None


def mb_on(view: CacheView, models: Iterable[str], device: str) -> float:
    """The memory ``models`` hold (or will) on ``device``: what a decision's loads need, or its evictions
    free, where a model needs room."""
    return sum(info.size_mb for m in models if (info := view.info(m)).device == device)


class Policy(ABC):
    """A pre-warming and eviction policy. Subclasses keep their own per-model history."""

    name: ClassVar[str]

    @abstractmethod
    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        """A request for ``model`` arrived; a load on demand for it, if it needed one, has started."""

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        """``model`` turned READY; requests that waited for it have been served."""
        return NOTHING

    def on_unloaded(self, model: str, now: float, view: CacheView) -> Decision:
        """``model`` was evicted to make room for a load on demand (not on this policy's own order)."""
        return NOTHING

    def tick(self, now: float, view: CacheView) -> Decision:
        """Time passed; act on anything planned for ``now`` or earlier."""
        return NOTHING

    @abstractmethod
    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        """``candidates`` (evictable models) ordered first-to-evict, for a load on demand that needs room."""

    def planned(self, now: float, view: CacheView) -> list[Step]:
        """The loads and evictions this policy intends after ``now``, soonest first; none by default (a
        policy that only reacts, as lru, plans nothing ahead)."""
        return []

    def forecast(self, model: str, now: float) -> Forecast:
        """When ``model``'s next request is expected and why; by default nothing foresees it."""
        return Forecast(model, Pattern.NONE, None)

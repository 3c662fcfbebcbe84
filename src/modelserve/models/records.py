"""What the server knows of each model version: its state, what serves it, and what it holds.

States follow Triton: UNAVAILABLE → LOADING → READY → UNLOADING → UNAVAILABLE, or FAILED with the
reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from modelserve.batching.batcher import Batcher
from modelserve.models.breaker import CircuitBreaker
from modelserve.models.spec import ModelSpec
from modelserve.models.stats import ModelStats
from modelserve.runtimes.base import Runtime

log = logging.getLogger("modelserve.models")


class ModelState(StrEnum):
    """Where a model version is in its life."""

    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"


class ManagerObserver(Protocol):
    """What the manager reports as it works (the server's metrics implement it)."""

    def observe_batch(self, model: str, samples: int, compute_s: float, queued_s: list[float]) -> None: ...

    def observe_load(self, model: str, seconds: float, ok: bool) -> None: ...

    def observe_eviction(self, model: str, reason: str) -> None: ...

    def observe_cold_start(self, model: str) -> None: ...

    def observe_abandoned(self, model: str, reason: str) -> None: ...

    def observe_cache(self, model: str, hit: bool) -> None: ...


class LoadAdvisor(Protocol):
    """A pre-warming policy as the manager consults it: told of requests (once answered, with their
    arrival time, wall clock), of requests that found their model not READY, loads and evictions it did
    not order, and asked which idle models to evict first when a load needs room."""

    def arrived(self, model: str, at: float) -> None: ...

    def cold_start(self, model: str) -> None: ...

    def loaded(self, model: str) -> None: ...

    def evicted(self, model: str) -> None: ...

    def eviction_order(self, candidates: list[str]) -> list[str]: ...


@dataclass(eq=False)
class ModelVersion:
    """One version of a model and everything that serves it. ``version`` is None when the model
    failed before its versions could be read (a broken config.yaml, say)."""

    name: str
    version: int | None
    state: ModelState
    reason: str = ""
    spec: ModelSpec | None = None
    runtime: Runtime | None = None
    batcher: Batcher | None = None
    stats: ModelStats = field(default_factory=ModelStats)
    memory: dict[str, int] = field(default_factory=dict)  # bytes held, by kind of memory: "CPU", "GPU"
    weights_bytes: int = 0  # the runtime's own estimate at load: no footprint is smaller
    load_seconds: float = 0.0
    in_flight: int = 0  # requests inside: validated, queued or running
    breaker: CircuitBreaker | None = None  # None when CIRCUIT_BREAKER_FAILURES is 0
    pinned: bool = False  # config.yaml `pinned: true`: never evicted
    last_used_ns: int = 0  # perf_counter_ns of the last request admitted, or of the load: the LRU order
    failed_at: float = 0.0  # monotonic time of the last failure: on-demand loads wait a cool-down after it

    @property
    def memory_bytes(self) -> int:
        """Host memory the version holds, as measured when it loaded."""
        return self.memory.get("CPU", 0)

    def fail(self, reason: str) -> None:
        """Record why this version cannot serve."""
        self.state, self.reason, self.failed_at = ModelState.FAILED, reason, time.monotonic()
        log.error("model %s version %s failed to load: %s", self.name, self.version, reason)


def is_ready(record: ModelVersion | None) -> bool:
    """Whether a version is there and serving."""
    return record is not None and record.state is ModelState.READY


def how_to_load(name: str) -> str:
    """The two calls that load a model, for error messages."""
    return f"load it with POST /v1/models/{name}/load or POST /v2/repository/models/{name}/load"


def not_ready(record: ModelVersion) -> str:
    """Why a version does not serve, in a sentence that says what to do."""
    which = f"model '{record.name}'" + (f" version {record.version}" if record.version is not None else "")
    if record.state is ModelState.FAILED:
        return f"{which} failed to load: {record.reason}"
    if record.state is ModelState.UNAVAILABLE:
        detail = f" ({record.reason})" if record.reason not in ("", "unloaded") else ""
        return f"{which} is not loaded{detail}; {how_to_load(record.name)}"
    return f"{which} is {record.state.lower()}"


Versions = dict[int | None, ModelVersion]


class ModelRecords:
    """Every model version the server has records of, by name, then by version.

    The loader writes it; the manager, eviction and the metrics read it. Names enter only through a
    load of a model the repository holds (or one the operator named at startup), so its size is
    bounded by the repository, never by what callers send.
    """

    def __init__(self) -> None:
        self._models: dict[str, Versions] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def names(self) -> list[str]:
        """The names with records, in the order they were first loaded."""
        return list(self._models)

    def of(self, name: str) -> Versions | None:
        """The versions of ``name`` by number (None: a model that failed before its versions were read)."""
        return self._models.get(name)

    def setdefault(self, name: str) -> Versions:
        """The versions of ``name``, an empty table first if it has none."""
        return self._models.setdefault(name, {})

    def replace(self, name: str, versions: Versions) -> None:
        """Set the versions of ``name``, in version order."""
        self._models[name] = dict(sorted(versions.items(), key=lambda item: item[0] or 0))

    def forget(self, name: str) -> None:
        """Drop ``name``: a model the repository turned out not to hold."""
        self._models.pop(name, None)

    def all(self) -> list[ModelVersion]:
        """Every version of every model."""
        return [record for versions in self._models.values() for record in versions.values()]

    def in_state(self, state: ModelState) -> list[ModelVersion]:
        """Every version in ``state``."""
        return [record for record in self.all() if record.state is state]

    def loaded(self) -> dict[str, list[ModelVersion]]:
        """The versions holding a runtime, by model: what eviction may choose from."""
        held: dict[str, list[ModelVersion]] = {}
        for name, versions in self._models.items():
            if records := [r for r in versions.values() if r.runtime is not None]:
                held[name] = records
        return held

"""The ModelManager owns every loaded model: it loads, serves and unloads them, and knows their states.

States follow Triton: UNAVAILABLE → LOADING → READY → UNLOADING → UNAVAILABLE, or FAILED with the
reason. Concurrent requests to load one model share a single load; load and unload of one model are
serialised. Loading runs on its own threads, so a slow load never stalls inference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Protocol

from opentelemetry.trace import Tracer

from modelserve.batching.batcher import Batcher
from modelserve.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelControlDisabled,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ModelserveError,
    Overloaded,
)
from modelserve.models.breaker import CircuitBreaker
from modelserve.models.memory import MemoryWatchdog, release_freed_memory
from modelserve.models.spec import BatchingDefaults, ModelSpec, resolve
from modelserve.models.stats import ModelStats
from modelserve.models.warmup import warm_up
from modelserve.repository.layout import ModelRepository, ModelSource
from modelserve.runtimes.base import Runtime, runtime_class
from modelserve.types import InferenceRequest, InferenceResponse

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
    memory_bytes: int = 0
    load_seconds: float = 0.0
    in_flight: int = 0  # requests inside: validated, queued or running
    breaker: CircuitBreaker | None = None  # None when CIRCUIT_BREAKER_FAILURES is 0

    def fail(self, reason: str) -> None:
        """Record why this version cannot serve."""
        self.state, self.reason = ModelState.FAILED, reason
        log.error("model %s version %s failed to load: %s", self.name, self.version, reason)


class ModelManager:
    """Loads models from a repository on demand of the operator and routes requests to them."""

    def __init__(
        self,
        repository: ModelRepository,
        executor: Executor,
        *,
        defaults: BatchingDefaults,
        load_timeout_s: float,
        request_timeout_s: float,
        control_enabled: bool,
        breaker_failures: int = 0,
        breaker_cooldown_s: float = 30.0,
        max_in_flight: int = 0,
        watchdog: MemoryWatchdog | None = None,
        observer: ManagerObserver | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.repository = repository
        self._executor = executor
        self._defaults = defaults
        self._load_timeout_s = load_timeout_s
        self._request_timeout_s = request_timeout_s
        self._control_enabled = control_enabled
        self._breaker_failures = breaker_failures
        self._max_in_flight = max_in_flight
        self.watchdog = watchdog or MemoryWatchdog()
        self.in_flight = 0  # inference requests inside any model
        self._breaker_cooldown_s = breaker_cooldown_s
        self._observer = observer
        self._tracer = tracer
        self._models: dict[str, dict[int | None, ModelVersion]] = {}
        self._loads: dict[str, asyncio.Task[list[ModelVersion]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self, names: list[str]) -> None:
        """Load the models named (``*`` for all) at startup; failures are recorded, never fatal."""
        await asyncio.to_thread(self.repository.check)
        if "*" in names:
            names = await asyncio.to_thread(self.repository.names)
        results = await asyncio.gather(*(self._shared_load(n) for n in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, ModelNotFound):
                self._models[name] = {None: ModelVersion(name, None, ModelState.FAILED, result.message)}
                log.error("cannot load %s at startup: %s", name, result.message)
            elif isinstance(result, BaseException) and not isinstance(result, ModelserveError):
                raise result

    async def close(self) -> None:
        """Unload every model, letting queued requests finish first."""
        for name in list(self._models):
            await self._unload(name)

    # -- control -------------------------------------------------------------------------------------

    async def load(self, name: str) -> list[ModelVersion]:
        """Load (or reload) a model at the operator's request; the versions now served are returned."""
        if not self._control_enabled:
            raise ModelControlDisabled(
                "loading models at runtime is disabled; start the server with --model-control-mode explicit"
            )
        self.watchdog.check_load(name)
        return await self._shared_load(name)

    async def unload(self, name: str) -> None:
        """Stop serving every version of a model, after its queued requests finish."""
        if not self._control_enabled:
            raise ModelControlDisabled(
                "unloading models at runtime is disabled; start the server with --model-control-mode explicit"
            )
        if name not in self._models and not self._in_repository(name):
            raise ModelNotFound(f"model '{name}' is not in the model repository")
        await self._unload(name)

    async def _shared_load(self, name: str) -> list[ModelVersion]:
        task = self._loads.get(name)
        if task is None:
            task = asyncio.create_task(self._load(name), name=f"load:{name}")
            self._loads[name] = task
            task.add_done_callback(lambda _: self._loads.pop(name, None))
        # A caller that gives up must not cancel the load the others are waiting for.
        return await asyncio.shield(task)

    async def _load(self, name: str) -> list[ModelVersion]:
        async with self._lock(name):
            versions = self._models.setdefault(name, {})
            try:
                source = await asyncio.to_thread(self._read_source, name)
            except ModelLoadError as exc:
                if not any(v.state is ModelState.READY for v in versions.values()):
                    versions.clear()
                    versions[None] = ModelVersion(name, None, ModelState.FAILED)
                    versions[None].fail(exc.message)
                if self._observer is not None:
                    self._observer.observe_load(name, 0.0, False)
                raise
            except ModelNotFound:
                if not versions:
                    del self._models[name]
                raise
            versions.pop(None, None)
            wanted = source.selected_versions()
            fresh = [ModelVersion(name, v, ModelState.LOADING) for v in wanted if not _ready(versions.get(v))]
            versions.update({record.version: record for record in fresh})
            await asyncio.gather(*(self._load_version(source, record) for record in fresh))
            failed = [r.reason for r in fresh if r.state is ModelState.FAILED]
            if not failed:  # a failed reload leaves the versions that were serving in place
                for version, record in list(versions.items()):
                    if version not in wanted:
                        await self._retire(record)
                        del versions[version]
            self._models[name] = dict(sorted(versions.items(), key=lambda item: item[0] or 0))
            if failed:
                raise ModelLoadError("; ".join(failed))
            return [r for r in self._models[name].values() if r.state is ModelState.READY]

    def _read_source(self, name: str) -> ModelSource:
        try:
            return self.repository.source(name)
        except ModelserveError:
            raise
        except Exception as exc:  # storage failures: permissions, a store that does not answer
            raise ModelLoadError(
                f"cannot read model '{name}' from the repository: {type(exc).__name__}: {exc}"
            ) from exc

    async def _load_version(self, source: ModelSource, record: ModelVersion) -> None:
        started = time.perf_counter()
        await self._build_version(source, record)
        if self._observer is not None:
            ok = record.state is ModelState.READY
            self._observer.observe_load(source.name, time.perf_counter() - started, ok)

    async def _build_version(self, source: ModelSource, record: ModelVersion) -> None:
        assert record.version is not None
        model_file = source.files[record.version]
        runtime = runtime_class(source.platform)(model_file, source.config)
        started = time.perf_counter()
        loading = asyncio.get_running_loop().run_in_executor(None, runtime.load)
        try:
            signature = await asyncio.wait_for(asyncio.shield(loading), self._load_timeout_s)
            spec = resolve(
                source.name, record.version, source.platform, source.config, signature, self._defaults, model_file
            )
        except TimeoutError:
            # The thread cannot be stopped; free what it loads once it is done.
            loading.add_done_callback(lambda _: runtime.unload())
            record.fail(f"{model_file}: did not load within {self._load_timeout_s:g} s (MODEL_LOAD_TIMEOUT)")
            return
        except ModelLoadError as exc:
            runtime.unload()
            record.fail(exc.message)
            return
        except Exception as exc:  # a backend's own error for a file it cannot read
            runtime.unload()
            record.fail(f"{model_file}: {type(exc).__name__}: {exc}")
            return
        observe = partial(self._observer.observe_batch, source.name) if self._observer else None
        record.batcher = Batcher(
            f"{source.name}:{record.version}",
            runtime.infer,
            self._executor,
            record.stats,
            max_batch_size=spec.max_batch_size,
            max_queue_delay_ms=spec.max_queue_delay_ms,
            preferred_batch_sizes=spec.preferred_batch_sizes,
            max_queue_size=spec.max_queue_size,
            instance_count=spec.instance_count,
            observe_batch=observe,
            inline_below_us=self._defaults.inline_below_us,
            tracer=self._tracer,
        )
        record.spec, record.runtime = spec, runtime
        if self._breaker_failures:
            record.breaker = CircuitBreaker(source.name, self._breaker_failures, self._breaker_cooldown_s)
        record.memory_bytes = runtime.memory_bytes()
        record.load_seconds = time.perf_counter() - started
        warmup = source.config.warmup
        if failure := await warm_up(runtime, spec, warmup, model_file, self._load_timeout_s, self._executor):
            return record.fail(failure)
        record.state = ModelState.READY
        log.info("model %s version %s ready in %.3f s", source.name, record.version, record.load_seconds)

    async def _unload(self, name: str) -> None:
        async with self._lock(name):
            versions = self._models.get(name, {})
            for record in versions.values():
                await self._retire(record)
            # Retired versions stay listed as UNAVAILABLE "unloaded", as Triton's index shows them.
            self._models[name] = {v: r for v, r in versions.items() if v is not None}

    async def _retire(self, record: ModelVersion) -> None:
        if record.state is not ModelState.READY:
            return
        record.state = ModelState.UNLOADING
        if record.batcher is not None:
            await record.batcher.close()
        runtime, record.runtime, record.batcher = record.runtime, None, None
        if runtime is not None:
            await asyncio.to_thread(_free, runtime)
        record.state, record.reason = ModelState.UNAVAILABLE, "unloaded"
        log.info("model %s version %s unloaded", record.name, record.version)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- serving -------------------------------------------------------------------------------------

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The READY version asked for (the newest if none is named), or why there is none."""
        versions = self._models.get(name)
        if not versions:
            if self._in_repository(name):
                raise ModelNotReady(f"model '{name}' is not loaded; {_how_to_load(name)}")
            raise ModelNotFound(f"model '{name}' is not in the model repository")
        if version is not None:
            record = versions.get(version)
            if record is None:
                served = ", ".join(str(v) for v in versions if v is not None) or "none"
                raise ModelNotFound(f"model '{name}' has no version {version} loaded; versions served: {served}")
            if record.state is not ModelState.READY:
                raise ModelNotReady(_not_ready(record))
            return record
        ready = [r for r in versions.values() if r.state is ModelState.READY]
        if not ready:
            raise ModelNotReady(_not_ready(next(reversed(versions.values()))))
        return ready[-1]

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model the server knows of, loaded or not."""
        versions = self._models.get(name)
        if versions is None:
            if self._in_repository(name):
                return []
            raise ModelNotFound(f"model '{name}' is not in the model repository")
        return list(versions.values())

    def serving(self, name: str, version: int | None = None) -> list[ModelVersion]:
        """The versions of a model serving now (or just ``version``, or why it does not serve)."""
        if version is not None:
            return [self.get(name, version)]
        return [r for r in self.versions(name) if r.state is ModelState.READY]

    def ready(self) -> list[ModelVersion]:
        """Every version that is serving now."""
        return self._in_state(ModelState.READY)

    def failed(self) -> list[ModelVersion]:
        """Every version (or model) whose last load failed, with the reason."""
        return self._in_state(ModelState.FAILED)

    def _in_state(self, state: ModelState) -> list[ModelVersion]:
        return [r for versions in self._models.values() for r in versions.values() if r.state is state]

    async def index(self) -> list[ModelVersion]:
        """Every model in the repository or in memory, with its state; never-loaded ones as UNAVAILABLE."""
        names = set(await asyncio.to_thread(self.repository.names)) | set(self._models)
        entries: list[ModelVersion] = []
        for name in sorted(names):
            versions = self._models.get(name)
            entries.extend(versions.values() if versions else [ModelVersion(name, None, ModelState.UNAVAILABLE)])
        return entries

    async def infer(
        self,
        request: InferenceRequest,
        deadline_s: float | None = None,
        gone: Callable[[], Awaitable[object]] | None = None,
    ) -> InferenceResponse:
        """Validate a request against its model, run it through the model's batcher, and time it.

        ``deadline_s`` is the time the caller has left (a gRPC deadline); REQUEST_TIMEOUT_SEC caps it.
        ``gone`` returns when the caller hangs up (HTTP); a request still queued then never runs.
        """
        record = self.get(request.model, request.version)
        spec, batcher = record.spec, record.batcher
        assert spec is not None
        assert batcher is not None
        if self._max_in_flight and self.in_flight >= self._max_in_flight:
            raise Overloaded(
                f"the server holds {self.in_flight} inference requests (MAX_INFLIGHT_REQUESTS); retry later"
            )
        breaker = record.breaker
        if breaker is not None:
            breaker.admit()
        started = time.perf_counter_ns()
        record.in_flight += 1
        self.in_flight += 1
        try:
            size = spec.validate(request.inputs)
            wanted = request.outputs or spec.output_names
            if request.outputs:
                spec.check_outputs(request.outputs)
            limit, reason = self._request_timeout_s, "REQUEST_TIMEOUT_SEC"
            if deadline_s is not None and deadline_s < limit:
                limit, reason = deadline_s, "the caller's deadline"
            if (timeout := _timeout_parameter(request.parameters)) is not None and timeout < limit:
                limit, reason = timeout, "the request's timeout parameter"
            try:
                async with asyncio.timeout(limit):
                    outputs = await batcher.submit(request.inputs, size, gone)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"model '{request.model}' did not answer within {limit:g} s ({reason})"
                ) from None
        except ModelserveError as exc:
            record.stats.record_request(False, time.perf_counter_ns() - started)
            if breaker is not None and isinstance(exc, InferenceFailed):
                breaker.failed(exc.message)
            raise
        finally:
            record.in_flight -= 1
            self.in_flight -= 1
        if breaker is not None:
            breaker.succeeded()
        record.stats.record_request(True, time.perf_counter_ns() - started)
        return InferenceResponse(request.model, spec.version, {n: outputs[n] for n in wanted}, request.id)

    def _in_repository(self, name: str) -> bool:
        return self.repository.contains(name)


def _timeout_parameter(parameters: dict[str, object]) -> float | None:
    """The V2 ``timeout`` request parameter in seconds: Triton's microseconds, 0 or absent for none."""
    value = parameters.get("timeout")
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter 'timeout' is {value!r}; send a whole number of microseconds (0: no timeout)")
    return value / 1e6


def _free(runtime: Runtime) -> None:
    """Unload a runtime and give what it held back to the kernel, so RSS falls as far as it rose."""
    runtime.unload()
    release_freed_memory()


def _ready(record: ModelVersion | None) -> bool:
    return record is not None and record.state is ModelState.READY


def _how_to_load(name: str) -> str:
    return f"load it with POST /v1/models/{name}/load or POST /v2/repository/models/{name}/load"


def _not_ready(record: ModelVersion) -> str:
    which = f"model '{record.name}'" + (f" version {record.version}" if record.version is not None else "")
    if record.state is ModelState.FAILED:
        return f"{which} failed to load: {record.reason}"
    if record.state is ModelState.UNAVAILABLE:
        return f"{which} is not loaded; {_how_to_load(record.name)}"
    return f"{which} is {record.state.lower()}"

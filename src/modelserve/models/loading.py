"""Loading and unloading model versions, and the records of where each one stands.

Concurrent requests to load one model share a single load; load and unload of one model are
serialised. Loading runs on its own threads, so a slow load never stalls inference. Whenever a memory
budget is set or models may be evicted, loads also queue behind eviction's gate (``Eviction.exclusive``):
a footprint measured while another model loads would be partly that model's, and two loads evicting
for each other would each hold the lock the other needs. Locks are always taken gate first, then the
model's own. The loader asks eviction for room before a load and to settle the budgets after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import replace
from functools import partial

from opentelemetry.trace import Tracer

from modelserve.batching.batcher import Batcher
from modelserve.batching.sequence_scheduler import SequenceScheduler
from modelserve.errors import InsufficientMemory, ModelLoadError, ModelNotFound, ModelserveError, StoreUnavailable
from modelserve.models.breaker import CircuitBreaker
from modelserve.models.ensemble import EnsemblePlan, Step, calls_back, ensemble_plan
from modelserve.models.eviction import Eviction
from modelserve.models.memory import release_freed_memory, rss_bytes
from modelserve.models.records import (
    LoadAdvisor,
    ManagerObserver,
    ModelRecords,
    ModelState,
    ModelVersion,
    Versions,
    is_ready,
    not_ready,
)
from modelserve.models.spec import BatchingDefaults, ModelSpec, resolve
from modelserve.models.warmup import first_run, warm_up
from modelserve.repository.config import Platform
from modelserve.repository.layout import ModelRepository, ModelSource
from modelserve.repository.llm import LLMConfig, LLMDefaults
from modelserve.repository.overrides import Overrides
from modelserve.runtimes.base import Runtime, runtime_class
from modelserve.runtimes.pb_utils import ModelCalls
from modelserve.runtimes.python import PythonRuntime
from modelserve.types import InferenceRequest, InferenceResponse

log = logging.getLogger("modelserve.models")


class ModelLoader:
    """Owns the loads, unloads and version records of every model; eviction makes room for its loads."""

    def __init__(
        self,
        repository: ModelRepository,
        executor: Executor,
        records: ModelRecords,
        eviction: Eviction,
        *,
        background: Executor | None = None,
        defaults: BatchingDefaults,
        load_timeout_s: float,
        breaker_failures: int = 0,
        breaker_cooldown_s: float = 30.0,
        observer: ManagerObserver | None = None,
        tracer: Tracer | None = None,
        overrides: Overrides | None = None,
        llm_defaults: LLMDefaults | None = None,
        calls: Callable[[InferenceRequest], Awaitable[InferenceResponse]] | None = None,
    ) -> None:
        self.repository = repository
        self._calls = calls  # where a Python model's requests to other models (BLS) go: the manager's infer
        self.llm_defaults = llm_defaults or LLMDefaults()  # MAX_NUM_SEQS, QUANTIZATION, ... for generative models
        self.overrides = overrides  # models a load request's parameters serve instead of the repository's
        self._executor = executor
        self._background = background  # lower priority levels' batches, where they would run on executor
        self._records = records
        self._eviction = eviction
        self._defaults = defaults
        self._load_timeout_s = load_timeout_s
        self._budgets = eviction.budgets
        self._meters: dict[str, Callable[[], int]] = {"CPU": rss_bytes} | {b.kind: b.meter for b in self._budgets}
        self._breaker_failures = breaker_failures
        self._breaker_cooldown_s = breaker_cooldown_s
        self._observer = observer
        self._tracer = tracer
        self._loads: dict[str, asyncio.Task[list[ModelVersion]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.advisor: LoadAdvisor | None = None  # a pre-warming policy, told of the loads it did not order
        self.pins: dict[str, frozenset[int]] = {}  # model → versions served instead of the policy's (a rollout's)
        # The stateful versions (sequence_batching) serving now: run by these instead of a batcher.
        self.sequences: dict[ModelVersion, SequenceScheduler] = {}
        self._building = 0  # versions loading now
        self._builds = 0  # versions whose load has started, ever: a load ran alone when none started during it

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self, names: list[str]) -> None:
        """Load the models named (``*`` for all) at startup; failures are recorded, never fatal."""
        await asyncio.to_thread(self.repository.check)
        if "*" in names:
            names = await asyncio.to_thread(self.repository.names)
        loads = (self.load(n, startup=True) for n in names)
        results = await asyncio.gather(*loads, return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if not isinstance(result, ModelserveError):
                raise result
            if isinstance(result, ModelNotFound | StoreUnavailable) and not self._records.of(name):
                # Shown in /health and the index as FAILED with the reason, as a file that failed to load is.
                self._records.replace(name, {None: ModelVersion(name, None, ModelState.FAILED, result.message)})
            if not isinstance(result, ModelLoadError):  # a failed load has logged its reason already
                log.error("cannot load %s at startup: %s", name, result.message)

    async def close(self) -> None:
        """Unload every model, letting queued requests finish first."""
        for name in self._records.names():
            await self.unload(name)

    # -- loading -------------------------------------------------------------------------------------

    async def load(self, name: str, *, startup: bool = False) -> list[ModelVersion]:
        """One load of ``name`` however many callers ask; ``startup`` loads (the operator's LOAD_MODELS)
        are not held to MEMORY_SOFT_LIMIT_MB, which guards against what arrives at runtime."""
        task = self._loads.get(name)
        if task is None:
            task = asyncio.create_task(self._load(name, startup), name=f"load:{name}")
            self._loads[name] = task
            task.add_done_callback(lambda _: self._loads.pop(name, None))
        # A caller that gives up must not cancel the load the others are waiting for.
        return await asyncio.shield(task)

    async def _load(self, name: str, startup: bool) -> list[ModelVersion]:
        composing: dict[str, str] | None = None  # an ensemble's step models: why each one that does not serve
        while True:
            async with self._eviction.exclusive(), self._lock(name):
                versions = self._records.setdefault(name)
                source = await self._source(name, versions)
                if source.platform is not Platform.ENSEMBLE or composing is not None:
                    return await self._load_source(source, versions, startup, composing or {})
            # Its step models load first, as Triton loads them; their loads take the gate and their own
            # locks, so never while this load holds them.
            composing = await self._load_composing(source, startup)

    async def _source(self, name: str, versions: Versions) -> ModelSource:
        """The model as the repository (or a load request) has it now; a model that cannot be read is
        recorded FAILED, unless a version of it serves."""
        try:
            return await asyncio.to_thread(self._read_source, name)
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
                self._records.forget(name)
            raise

    async def _load_source(
        self, source: ModelSource, versions: Versions, startup: bool, composing: dict[str, str]
    ) -> list[ModelVersion]:
        name = source.name
        wanted = source.selected_versions()
        if present := sorted(self.pins.get(name, frozenset()) & source.files.keys()):
            wanted = present
        todo = [v for v in wanted if not is_ready(versions.get(v))]
        try:
            if todo:
                await self._eviction.make_room(source, todo, startup)
        except InsufficientMemory:
            if not versions:
                self._records.forget(name)
            raise
        versions.pop(None, None)
        fresh = [ModelVersion(name, v, ModelState.LOADING) for v in todo]
        versions.update({record.version: record for record in fresh})
        for record in fresh:
            if source.platform is Platform.ENSEMBLE:  # nothing of its own to load, nor to measure
                self._build_ensemble(source, record, composing)
            else:
                await self._load_version(source, record)
        failed = [r.reason for r in fresh if r.state is ModelState.FAILED]
        if not failed:  # a failed reload leaves the versions that were serving in place
            for version, record in list(versions.items()):
                if version not in wanted:
                    await self._retire(record)
                    del versions[version]
        self._records.replace(name, versions)
        await self._eviction.settle(name)
        if self.advisor is not None and not failed:
            self.advisor.loaded(name)
        if failed:
            raise ModelLoadError("; ".join(failed))
        return [r for r in versions.values() if r.state is ModelState.READY]

    def _read_source(self, name: str) -> ModelSource:
        if self.overrides is not None and (override := self.overrides.get(name)) is not None:
            return override
        try:
            return self.repository.source(name)
        except ModelserveError:
            raise
        except Exception as exc:  # storage failures: permissions, a store that does not answer
            raise ModelLoadError(
                f"cannot read model '{name}' from the repository: {type(exc).__name__}: {exc}"
            ) from exc

    async def _load_composing(self, source: ModelSource, startup: bool) -> dict[str, str]:
        """Load the models an ensemble's steps call; why each one that failed did. Nothing loads for an
        ensemble whose plan cannot run (its own load says why), nor through a step that would lead back
        to it: that load would wait on this one."""
        try:
            models = sorted(ensemble_plan(source.name, source.config).models)
        except ModelLoadError:
            return {}
        problems = await asyncio.to_thread(calls_back, source.name, models, self._step_models)
        loading = [model for model in models if model not in problems]
        results = await asyncio.gather(*(self.load(m, startup=startup) for m in loading), return_exceptions=True)
        for model, result in zip(loading, results, strict=True):
            if isinstance(result, ModelserveError):
                problems[model] = result.message
            elif isinstance(result, BaseException):
                raise result
        return problems

    def _step_models(self, name: str) -> list[str]:
        """The models the steps of ``name`` call: none unless it is an ensemble (or cannot be read, which its
        own load reports). Reads its source: call it off the event loop."""
        try:
            scheduling = self._read_source(name).config.ensemble_scheduling
        except ModelserveError:
            return []
        return [step.model_name for step in scheduling.step] if scheduling is not None else []

    def _build_ensemble(self, source: ModelSource, record: ModelVersion, composing: dict[str, str]) -> None:
        """An ensemble turns READY once its plan holds against the step models serving now: it has no
        runtime, no batcher and no memory of its own, its requests being its steps' (models/ensemble_run.py)."""
        assert record.version is not None
        started = time.perf_counter()
        try:
            plan = ensemble_plan(source.name, source.config)
            models = {step.number: self._step_spec(plan, step, composing) for step in plan.steps}
            spec = resolve(
                source.name,
                record.version,
                source.platform,
                source.config,
                None,
                self._defaults,
                source.files[record.version],
            )
            record.spec = replace(spec, ensemble=plan.bind(spec, models))
        except ModelLoadError as exc:
            record.fail(exc.message)
        else:
            record.load_seconds = time.perf_counter() - started
            record.last_used_ns = time.perf_counter_ns()
            record.state = ModelState.READY
            log.info("ensemble %s version %s ready, calling %s", source.name, record.version, sorted(plan.models))
        if self._observer is not None:
            self._observer.observe_load(source.name, time.perf_counter() - started, record.state is ModelState.READY)

    def _step_spec(self, plan: EnsemblePlan, step: Step, composing: dict[str, str]) -> ModelSpec:
        """The spec of the version a step calls now (for -1, the newest serving), or ModelLoadError naming
        the step and why its model does not serve."""
        if (why := composing.get(step.model)) is not None:
            raise ModelLoadError(f"{plan.where(step)} did not load: {why}")
        versions = self._records.of(step.model) or {}
        if step.version is not None:
            record = versions.get(step.version)
            if record is None:
                served = ", ".join(str(v) for v in versions if v is not None) or "none"
                raise ModelLoadError(f"{plan.where(step)}: the model has no version {step.version}; versions: {served}")
        else:
            ready = [r for r in versions.values() if r.state is ModelState.READY]
            record = ready[-1] if ready else next(reversed(versions.values()), None)
            if record is None:
                raise ModelLoadError(f"{plan.where(step)}: the model is not loaded")
        if record.state is not ModelState.READY or record.spec is None:
            raise ModelLoadError(f"{plan.where(step)}: {not_ready(record)}")
        return record.spec

    async def _load_version(self, source: ModelSource, record: ModelVersion) -> None:
        started = time.perf_counter()
        before = await asyncio.to_thread(self._settled_reading)
        alone, self._builds = self._building == 0, self._builds + 1
        builds, self._building = self._builds, self._building + 1
        try:
            await self._build_version(source, record)
        finally:
            self._building -= 1
        if record.runtime is not None:
            # What the load allocated and already freed (the parsed file, say) goes back first, so that the
            # footprint is what the model keeps, and RSS shows it.
            await asyncio.to_thread(release_freed_memory)
            alone = alone and builds == self._builds
            self._measure(record, record.runtime, before if alone else None)
        if self._observer is not None:
            ok = record.state is ModelState.READY
            self._observer.observe_load(source.name, time.perf_counter() - started, ok)

    def _settled_reading(self) -> dict[str, int]:
        """The meters once the heap's free pages are back with the kernel: otherwise a load reuses memory
        freed earlier and seems smaller, and an unload returns that memory too and seems larger."""
        release_freed_memory()
        return {kind: meter() for kind, meter in self._meters.items()}

    def _measure(self, record: ModelVersion, runtime: Runtime, before: dict[str, int] | None) -> None:
        """Footprint by kind: what each meter rose by, the runtime's estimate as the host floor."""
        floor = record.weights_bytes = runtime.memory_bytes()
        if before is None:  # another load ran meanwhile: its memory would be counted too
            record.memory = {"CPU": floor}
        else:
            record.memory = {kind: max(0, meter() - before[kind]) for kind, meter in self._meters.items()}
            record.memory["CPU"] = max(record.memory["CPU"], floor)
        assert record.version is not None
        for budget in self._budgets:
            budget.learn(record.name, record.version, record.memory.get(budget.kind, 0))

    async def _build_version(self, source: ModelSource, record: ModelVersion) -> None:
        assert record.version is not None
        model_file = source.files[record.version]
        config = source.config
        if source.platform is Platform.LLM:
            try:
                config = config.model_copy(update={"llm": self.llm_defaults.apply(config.llm or LLMConfig())})
            except ModelLoadError as exc:
                record.fail(exc.message)
                return
        runtime = runtime_class(source.platform)(model_file, config)
        if isinstance(runtime, PythonRuntime) and self._calls is not None:
            runtime.calls = ModelCalls(asyncio.get_running_loop(), self._calls)
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
        executor, inline_below_us = self._executor, self._defaults.inline_below_us
        if isinstance(runtime, PythonRuntime):
            # Its execute may wait on BLS requests, which need the loop and the shared threads: it takes neither.
            executor, inline_below_us = runtime.executor, 0.0
        warmup = source.config.warmup
        if failure := await warm_up(runtime, spec, warmup, model_file, self._load_timeout_s, executor):
            record.fail(failure)  # warm_up has unloaded the runtime
            return
        # The footprint must include what a first request allocates; a stateful model's requests need the
        # control inputs a sequence gives them, so its footprint is corrected at its first unload instead.
        if warmup is None and self._budgets and spec.sequence is None:
            await first_run(runtime, spec, model_file, self._load_timeout_s, executor)
        if spec.sequence is not None:
            scheduler = SequenceScheduler(source.name, runtime.infer, executor, record.stats, spec.sequence)
            self.sequences[record] = scheduler
        else:
            record.batcher = self._batcher(source.name, record, runtime, spec, executor, inline_below_us)
        record.spec, record.runtime = spec, runtime
        record.pinned = source.config.pinned
        if self._breaker_failures:
            record.breaker = CircuitBreaker(source.name, self._breaker_failures, self._breaker_cooldown_s)
        record.load_seconds = time.perf_counter() - started
        record.last_used_ns = time.perf_counter_ns()  # a model just loaded is not the first to evict
        record.state = ModelState.READY
        log.info("model %s version %s ready in %.3f s", source.name, record.version, record.load_seconds)

    def _batcher(
        self,
        model: str,
        record: ModelVersion,
        runtime: Runtime,
        spec: ModelSpec,
        executor: Executor,
        inline_below_us: float,
    ) -> Batcher:
        observe = partial(self._observer.observe_batch, model) if self._observer else None
        abandoned = partial(self._observer.observe_abandoned, model) if self._observer else None
        return Batcher(
            f"{model}:{record.version}",
            runtime.infer,
            executor,
            record.stats,
            max_batch_size=spec.max_batch_size,
            max_queue_delay_ms=spec.max_queue_delay_ms,
            preferred_batch_sizes=spec.preferred_batch_sizes,
            adaptive_delay=spec.adaptive_delay,
            max_queue_size=spec.max_queue_size,
            instance_count=spec.instance_count,
            priority_levels=spec.priority_levels,
            background=self._background if executor is self._executor else None,
            observe_batch=observe,
            observe_abandoned=abandoned,
            inline_below_us=inline_below_us,
            tracer=self._tracer,
        )

    # -- unloading -----------------------------------------------------------------------------------

    async def unload(self, name: str, reason: str = "unloaded") -> None:
        """Stop serving every version of ``name``, after its queued requests finish."""
        async with self._lock(name):
            versions = self._records.of(name) or {}
            for record in versions.values():
                await self._retire(record, reason)
            # Retired versions stay listed as UNAVAILABLE "unloaded", as Triton's index shows them.
            self._records.replace(name, {v: r for v, r in versions.items() if v is not None})

    async def _retire(self, record: ModelVersion, reason: str = "unloaded") -> None:
        if record.state is not ModelState.READY:
            return
        record.state = ModelState.UNLOADING
        if record.batcher is not None:
            await record.batcher.close()
        if (scheduler := self.sequences.pop(record, None)) is not None:
            await scheduler.close()
        runtime, record.runtime, record.batcher = record.runtime, None, None
        if runtime is not None:
            before = await asyncio.to_thread(self._settled_reading)
            await asyncio.to_thread(_free, runtime)
            if self._building == 0 and record.version is not None:
                # What unloading gave back is what the next load will take again: it includes what
                # inference grew, and leaves out what the process's first load of a runtime set up for
                # good (ONNX Runtime's environment, some 30 MiB), which the load's reading counted.
                for budget in self._budgets:
                    freed = before[budget.kind] - budget.meter()
                    floor = record.weights_bytes if budget.kind == "CPU" else 0
                    budget.learn(record.name, record.version, max(freed, floor))
        record.state, record.reason = ModelState.UNAVAILABLE, reason
        log.info("model %s version %s %s", record.name, record.version, reason)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())


def _free(runtime: Runtime) -> None:
    """Unload a runtime and give what it held back to the kernel, so RSS falls as far as it rose."""
    runtime.unload()
    release_freed_memory()

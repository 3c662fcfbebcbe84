"""The ModelManager: the models the server knows of, and the requests it routes to them.

It composes three collaborators over one table of records (``ModelRecords``): the loader (loads,
unloads, footprints), eviction (room for a load: budgets, soft limit, a pre-warming policy's order)
and itself: the lookups the protocols make, on-demand loading, admission (in-flight bound, circuit
breaker, deadlines) and the request's trip through its model's batcher.

Lookups answer from the records; only a name the server has no records of is looked up in the
repository, on a worker thread, since on S3 that is a network round trip.

A rollout (``rollout/``) steers a model from outside: ``routes`` picks the version of each request that
names none (one dictionary lookup a request, whether or not a rollout runs), and ``pins`` says which
versions to keep loaded whatever the version policy says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from opentelemetry.trace import Tracer

from modelserve.batching.batcher import Arrays, Batcher
from modelserve.batching.sequence_scheduler import SequenceScheduler
from modelserve.batching.sequences import sequence_parameters
from modelserve.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelControlDisabled,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ModelserveError,
    Overloaded,
)
from modelserve.models.budget import MemoryBudget
from modelserve.models.cache import ResponseCache
from modelserve.models.ensemble import EnsemblePlan
from modelserve.models.ensemble_run import Deadline, run_ensemble
from modelserve.models.eviction import Eviction
from modelserve.models.loading import ModelLoader
from modelserve.models.memory import MemoryWatchdog
from modelserve.models.records import (
    LoadAdvisor,
    ManagerObserver,
    ModelRecords,
    ModelState,
    ModelVersion,
    how_to_load,
    not_ready,
)
from modelserve.models.spec import BatchingDefaults, ModelSpec
from modelserve.repository.config import ModelConfig
from modelserve.repository.layout import ModelRepository
from modelserve.repository.llm import LLMDefaults
from modelserve.repository.overrides import Overrides
from modelserve.types import InferenceRequest, InferenceResponse

log = logging.getLogger("modelserve.models")


class Unrecorded(ModelNotFound):
    """``get`` found no records of the name: whether the repository holds it is ``find``'s to ask."""


class ModelManager:
    """Loads models at the operator's request (or a request's, on demand) and routes requests to them."""

    def __init__(
        self,
        repository: ModelRepository,
        executor: Executor,
        *,
        background: Executor | None = None,
        defaults: BatchingDefaults,
        load_timeout_s: float,
        request_timeout_s: float,
        control_enabled: bool,
        on_demand: bool = False,
        budgets: Sequence[MemoryBudget] = (),
        breaker_failures: int = 0,
        breaker_cooldown_s: float = 30.0,
        max_in_flight: int = 0,
        watchdog: MemoryWatchdog | None = None,
        observer: ManagerObserver | None = None,
        tracer: Tracer | None = None,
        cache: ResponseCache | None = None,
        overrides: Overrides | None = None,
        llm_defaults: LLMDefaults | None = None,
    ) -> None:
        self.repository = repository
        self.cache = cache  # answers of the models whose config.yaml enables the response cache
        self._records = ModelRecords()
        self._eviction = Eviction(
            self._records,
            self._unload,
            budgets=budgets,
            watchdog=watchdog or MemoryWatchdog(),
            may_evict=on_demand,
            wait_s=load_timeout_s,
            observer=observer,
        )
        self._loader = ModelLoader(
            repository,
            executor,
            self._records,
            self._eviction,
            background=background,
            defaults=defaults,
            load_timeout_s=load_timeout_s,
            breaker_failures=breaker_failures,
            breaker_cooldown_s=breaker_cooldown_s,
            observer=observer,
            tracer=tracer,
            overrides=overrides,
            llm_defaults=llm_defaults,
            calls=self.infer,
        )
        self.budgets = self._eviction.budgets
        self.watchdog = self._eviction.watchdog
        self._observer = observer
        self._breaker_cooldown_s = breaker_cooldown_s
        self._request_timeout_s = request_timeout_s
        self._control_enabled = control_enabled or on_demand
        self.on_demand = on_demand
        self._max_in_flight = max_in_flight
        self.in_flight = 0  # inference requests inside any model
        self._advisor: LoadAdvisor | None = None
        # Model name → the version a request naming none goes to, chosen anew for each request.
        self.routes: dict[str, Callable[[], int]] = {}
        # Model name → the versions to serve instead of those its version policy selects (the loader's).
        self.pins: dict[str, frozenset[int]] = self._loader.pins

    @property
    def advisor(self) -> LoadAdvisor | None:
        """The pre-warming policy consulted on loads, evictions and requests, if one runs."""
        return self._advisor

    @advisor.setter
    def advisor(self, advisor: LoadAdvisor | None) -> None:
        self._advisor = self._loader.advisor = self._eviction.advisor = advisor

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self, names: list[str]) -> None:
        """Load the models named (``*`` for all) at startup; failures are recorded, never fatal."""
        await self._loader.start(names)

    async def poll(self) -> None:
        """Read the repository again and serve what it holds now (poll mode): models and versions that
        appeared load, versions its version policy no longer selects retire, and models gone from it
        unload. A remote repository's mirror takes only versions whose SHA256SUMS lists them, so a
        version being replicated there is picked up once published. A model that fails to load keeps
        its reason in the index and is tried again at the next poll."""
        present = set(await asyncio.to_thread(self.repository.names))
        for name in sorted(set(self._records.names()) - present):
            if any(r.state is ModelState.READY for r in (self._records.of(name) or {}).values()):
                await self._loader.unload(name, "removed from the repository")
        for name in sorted(present):
            try:
                await self._loader.load(name)
            except ModelserveError as exc:
                log.warning("poll: model %s did not load: %s", name, exc.message)

    async def close(self) -> None:
        """Unload every model, letting queued requests finish first."""
        await self._loader.close()

    async def shed(self) -> None:
        """Evict idle models, least recently used first, while RSS is above MEMORY_SOFT_LIMIT_MB."""
        await self._eviction.shed()

    async def evict(self, name: str, why: str) -> bool:
        """Evict ``name`` at a pre-warming policy's request, if it is loaded, idle and not pinned."""
        return await self._eviction.evict(name, why)

    async def prewarm(self, name: str) -> None:
        """Load ``name`` ahead of its requests, as a pre-warming policy asks; no request waits on it."""
        await self._loader.load(name)

    async def _unload(self, name: str, reason: str) -> None:
        await self._loader.unload(name, reason)

    # -- control -------------------------------------------------------------------------------------

    async def load(
        self, name: str, config: ModelConfig | None = None, files: dict[str, bytes] | None = None
    ) -> list[ModelVersion]:
        """Load (or reload) a model at the operator's request; the versions now served are returned.

        With ``config`` (and ``files``), the model is served with that config (from those files) until a
        load without them, as Triton's repository extension does (repository/overrides.py)."""
        if not self._control_enabled:
            raise ModelControlDisabled(
                "loading models at runtime is disabled; start the server with --model-control-mode explicit"
            )
        overrides = self._loader.overrides
        if config is None and files:
            raise InvalidInput(f"failed to load '{name}': file: parameters need a config parameter beside them")
        if config is not None and overrides is None:
            raise InvalidInput(f"failed to load '{name}': this server takes no config override")
        changed = config is not None or (overrides is not None and overrides.get(name) is not None)
        if config is not None and overrides is not None:
            base = None if files else await asyncio.to_thread(self._loader.repository.source, name)
            await asyncio.to_thread(overrides.apply, name, base, config, files or {})
        elif overrides is not None:
            overrides.clear(name)
        if changed:  # loaded versions keep their config: serve the new one from a fresh load
            await self._loader.unload(name, "reloaded with another config")
        return await self._loader.load(name)

    async def refresh(self, name: str) -> list[ModelVersion]:
        """Load the versions ``name``'s pins (or version policy) ask for and retire the others: the
        server's own change of versions, a rollout's, which the control mode does not restrict."""
        return await self._loader.load(name)

    async def unload(self, name: str) -> None:
        """Stop serving every version of a model, after its queued requests finish."""
        if not self._control_enabled:
            raise ModelControlDisabled(
                "unloading models at runtime is disabled; start the server with --model-control-mode explicit"
            )
        if name not in self._records:
            await self._require_in_repository(name)
        await self._loader.unload(name)
        await self._unload_ensembles_calling(name)

    async def _unload_ensembles_calling(self, name: str) -> None:
        """Unload the ensembles whose steps call ``name``, and those calling them, as Triton does when a
        model an ensemble is composed of is unloaded."""
        plans = {r.name: r.spec.ensemble for r in self.ready() if r.spec is not None and r.spec.ensemble is not None}
        calling = {ensemble for ensemble, plan in plans.items() if name in plan.models}
        for ensemble in sorted(calling):
            await self._loader.unload(ensemble, f"unloaded with model '{name}', which a step calls")
            await self._unload_ensembles_calling(ensemble)

    # -- lookups -------------------------------------------------------------------------------------

    def ready_version(self, name: str, version: int | None = None) -> ModelVersion | None:
        """The READY version asked for (the newest if none is named), or None: the lookup of every request,
        which neither raises nor awaits while its model serves."""
        versions = self._records.of(name)
        if not versions:
            return None
        if version is not None:
            record = versions.get(version)
            return record if record is not None and record.state is ModelState.READY else None
        for record in reversed(versions.values()):
            if record.state is ModelState.READY:
                return record
        return None

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The READY version asked for (the newest if none is named), or why there is none, from the
        records alone: a name with none raises ``Unrecorded``, which ``find`` takes to the repository."""
        if (ready := self.ready_version(name, version)) is not None:
            return ready
        versions = self._records.of(name)
        if not versions:
            raise Unrecorded.unknown(name, detail="the server has no records of it")
        if version is not None:
            record = versions.get(version)
            if record is None:
                served = ", ".join(str(v) for v in versions if v is not None) or "none"
                raise ModelNotFound.unknown(name, version, f"versions served: {served}")
            raise ModelNotReady(not_ready(record))
        raise ModelNotReady(not_ready(next(reversed(versions.values()))))

    async def find(self, name: str, version: int | None = None) -> ModelVersion:
        """The READY version asked for, or why there is none; a name the server has no records of is
        looked up in the repository (off the event loop): not loaded, or not found."""
        try:
            return self.get(name, version)
        except Unrecorded:
            await self._require_in_repository(name)
            raise ModelNotReady(f"model '{name}' is not loaded; {how_to_load(name)}") from None

    async def obtain(self, name: str, version: int | None = None) -> ModelVersion:
        """The READY version asked for, loading the model first in on-demand mode when it is not.

        Every request that arrives while its model is not READY is a cold start; those arriving
        together share one load. A model whose load failed is tried again only after the circuit
        breaker's cool-down, so that a broken file is not reloaded by every request for it.
        """
        try:
            return await self.find(name, version)
        except ModelNotReady:
            if not self.on_demand:
                raise
        if self._observer is not None:
            self._observer.observe_cold_start(name)
        if self.advisor is not None:
            self.advisor.cold_start(name)
        versions = self._records.of(name) or {}
        failed = [r for r in versions.values() if r.state is ModelState.FAILED]
        if failed and len(failed) == len(versions):
            waited = time.monotonic() - max(r.failed_at for r in failed)
            if waited < self._breaker_cooldown_s:
                raise ModelNotReady(
                    f"{not_ready(failed[-1])}; the next request after {self._breaker_cooldown_s - waited:.0f} s "
                    "tries to load it again"
                )
        try:
            await self._loader.load(name)
        except ModelLoadError as exc:
            raise ModelNotReady(f"model '{name}' failed to load on demand: {exc.message}") from exc
        return self.get(name, version)

    def knows(self, name: str) -> bool:
        """Whether the server holds records of ``name`` (serving, loading, failed or unloaded): a name
        it may label metrics with. Never asks the repository, so it is cheap on any path."""
        return name in self._records

    async def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model the server knows of, loaded or not."""
        versions = self._records.of(name)
        if versions is None:
            await self._require_in_repository(name)
            return []
        return list(versions.values())

    def records(self, name: str) -> list[ModelVersion]:
        """The versions of ``name`` the server has records of; none for a model it never loaded. Unlike
        ``versions``, it never asks the repository, so policies may call it as often as they like."""
        return list((self._records.of(name) or {}).values())

    async def serving(self, name: str, version: int | None = None) -> list[ModelVersion]:
        """The versions of a model serving now (or just ``version``, or why it does not serve)."""
        if version is not None:
            return [await self.find(name, version)]
        return [r for r in await self.versions(name) if r.state is ModelState.READY]

    def ready(self) -> list[ModelVersion]:
        """Every version that is serving now."""
        return self._records.in_state(ModelState.READY)

    def failed(self) -> list[ModelVersion]:
        """Every version (or model) whose last load failed, with the reason."""
        return self._records.in_state(ModelState.FAILED)

    def holding(self) -> list[ModelVersion]:
        """Every version that holds memory: loading, serving or being unloaded."""
        return [r for r in self._records.all() if r.runtime is not None or r.state is ModelState.LOADING]

    def every_version(self) -> list[ModelVersion]:
        """Every version the server has records of, loaded or not: those unloaded keep their statistics."""
        return self._records.all()

    async def index(self) -> list[ModelVersion]:
        """Every model in the repository or in memory, with its state; never-loaded ones as UNAVAILABLE."""
        names = set(await asyncio.to_thread(self.repository.names)) | set(self._records.names())
        entries: list[ModelVersion] = []
        for name in sorted(names):
            versions = self._records.of(name)
            entries.extend(versions.values() if versions else [ModelVersion(name, None, ModelState.UNAVAILABLE)])
        return entries

    async def _require_in_repository(self, name: str) -> None:
        """Raise ModelNotFound unless the repository holds ``name``, asked on a worker thread."""
        if not await asyncio.to_thread(self.repository.contains, name):
            raise ModelNotFound.unknown(name, detail="it is not in the model repository")

    # -- serving -------------------------------------------------------------------------------------

    async def infer(
        self,
        request: InferenceRequest,
        deadline_s: float | None = None,
        gone: Callable[[], bool] | None = None,
        *,
        alone: bool = False,
    ) -> InferenceResponse:
        """Validate a request against its model, run it through the model's batcher, and time it.

        ``deadline_s`` is the time the caller has left (a gRPC deadline); REQUEST_TIMEOUT_SEC caps it.
        ``gone`` says whether the caller has hung up (HTTP); a request whose caller has never runs.
        ``alone``: the caller's requests arrive one at a time (``Batcher.enqueue``).
        """
        # Before any load on demand: a policy, and its lru shadow, see when the request came, not when its
        # model was ready for it.
        arrived_at = time.time() if self.advisor is not None else 0.0
        version = request.version
        if version is None and (route := self.routes.get(request.model)) is not None:
            version = route()
        try:
            record = self.get(request.model, version)
        except (ModelNotReady, Unrecorded):  # evicted since the protocol's lookup, or never looked up
            record = await self.obtain(request.model, version)
        spec, batcher = record.spec, record.batcher
        assert spec is not None
        if spec.ensemble is not None:
            return await self._run_ensemble(record, spec, spec.ensemble, request, deadline_s, gone, arrived_at)
        if (scheduler := self._loader.sequences.get(record)) is not None:
            return await self._run_sequence(record, spec, scheduler, request, deadline_s)
        assert batcher is not None
        key, lookup_ns = None, 0
        if spec.response_cache and self.cache is not None:
            # Before admission: an answer computed before needs no model, no breaker's leave, no queue.
            looked_up = time.perf_counter_ns()
            key = self.cache.key(record.name, spec.version, request.inputs, request.outputs or spec.output_names)
            if (hit := self.cache.get(key, batcher)) is not None:
                return self._hit(record, request, hit, looked_up)
            lookup_ns = time.perf_counter_ns() - looked_up
        if self._max_in_flight and self.in_flight >= self._max_in_flight:
            raise Overloaded(
                f"the server holds {self.in_flight} inference requests (MAX_INFLIGHT_REQUESTS); retry later"
            )
        breaker = record.breaker
        trial = breaker.admit() if breaker is not None else False
        outcome: BaseException | None = None
        started = record.last_used_ns = time.perf_counter_ns()
        record.in_flight += 1
        self.in_flight += 1
        try:
            size = spec.validate(request.inputs)
            wanted = request.outputs or spec.output_names
            if request.outputs:
                spec.check_outputs(request.outputs)
            level = spec.priority_of(request.parameters)
            policy = spec.queue_policies.get(level)
            requested_us = _timeout_parameter(request.parameters)
            delay_ns, queue_s = 0, None
            if policy is not None and (queue_us := policy.timeout_us(requested_us)):
                if policy.timeout_action == "DELAY":
                    delay_ns = queue_us * 1000
                else:
                    queue_s = queue_us / 1e6
            # Under a DELAY policy that lets requests set it, a request's timeout delays rather than refuses it.
            delays = policy is not None and policy.timeout_action == "DELAY" and policy.allow_timeout_override
            limit, reason = self._time_limit(
                deadline_s,
                None if delays else requested_us,
                (queue_s, f"the queue policy's timeout of priority level {level}" if queue_s is not None else ""),
            )
            future = batcher.enqueue(
                request.inputs,
                size,
                gone,
                alone=alone,
                level=level,
                level_max_queue=policy.max_queue_size if policy is not None else 0,
                delay_ns=delay_ns,
            )
            if future.done():  # run at once: no deadline can pass
                outputs = future.result()
            else:
                # A timer that fails the request's future, which the batcher then drops unrun: a third of
                # what asyncio.timeout costs, on every request.
                expiry = asyncio.get_running_loop().call_later(limit, _expire, future, request.model, limit, reason)
                try:
                    outputs = await future
                finally:
                    expiry.cancel()
            if key is not None:
                self._store(record, batcher, key, {n: outputs[n] for n in wanted}, lookup_ns)
        except ModelserveError as exc:
            record.stats.record_failure(exc, time.perf_counter_ns() - started)
            outcome = exc
            raise
        except BaseException as exc:  # a server bug, or the caller's task cancelled
            outcome = exc
            raise
        finally:
            if breaker is not None:
                breaker.finished(outcome, trial)
            record.in_flight -= 1
            self.in_flight -= 1
            if not record.in_flight:
                self._eviction.model_idle()
            if self.advisor is not None:  # once answered: a policy may then unload the model at once
                self.advisor.arrived(request.model, arrived_at)
        record.stats.record_request(True, time.perf_counter_ns() - started)
        return InferenceResponse(request.model, spec.version, {n: outputs[n] for n in wanted}, request.id)

    async def _run_ensemble(
        self,
        record: ModelVersion,
        spec: ModelSpec,
        plan: EnsemblePlan,
        request: InferenceRequest,
        deadline_s: float | None,
        gone: Callable[[], bool] | None,
        arrived_at: float,
    ) -> InferenceResponse:
        """An ensemble's request: its steps, requests to their models through ``infer``, run on this loop
        within the request's time. Counted in the ensemble's statistics (one execution of the whole batch)
        and its ``in_flight``, not in MAX_INFLIGHT_REQUESTS, which its steps count as they run."""
        started = record.last_used_ns = time.perf_counter_ns()
        record.in_flight += 1
        try:
            size = spec.validate(request.inputs)
            wanted = request.outputs or spec.output_names
            if request.outputs:
                spec.check_outputs(request.outputs)
            limit, reason = self._time_limit(deadline_s, _timeout_parameter(request.parameters))
            deadline = Deadline(time.monotonic() + limit, limit, reason)
            outputs = await run_ensemble(plan, request, wanted, self.infer, deadline, gone)
        except ModelserveError as exc:
            record.stats.record_failure(exc, time.perf_counter_ns() - started)
            raise
        finally:
            record.in_flight -= 1
            if not record.in_flight:
                self._eviction.model_idle()
            if self.advisor is not None:
                self.advisor.arrived(request.model, arrived_at)
        record.stats.record_batch(1, size, 0, 0, 0)  # the time is its steps', in their models' statistics
        record.stats.record_request(True, time.perf_counter_ns() - started)
        return InferenceResponse(request.model, spec.version, outputs, request.id)

    async def _run_sequence(
        self,
        record: ModelVersion,
        spec: ModelSpec,
        scheduler: SequenceScheduler,
        request: InferenceRequest,
        deadline_s: float | None,
    ) -> InferenceResponse:
        """A stateful model's request: one step of its sequence (``sequence_id``, ``sequence_start``,
        ``sequence_end``), run by the sequence scheduler in its sequence's order. Never answered from the
        response cache, as its answer depends on the requests before it."""
        started = record.last_used_ns = time.perf_counter_ns()
        record.in_flight += 1
        self.in_flight += 1
        try:
            if self._max_in_flight and self.in_flight > self._max_in_flight:
                raise Overloaded(
                    f"the server holds {self.in_flight - 1} inference requests (MAX_INFLIGHT_REQUESTS); retry later"
                )
            size = spec.validate(request.inputs)
            if spec.max_batch_size and size != 1:
                raise InvalidInput(
                    f"inference request to model '{spec.name}' must specify batch-size 1 due to requirements of "
                    "sequence batcher: each request is one step of one sequence"
                )
            wanted = request.outputs or spec.output_names
            if request.outputs:
                spec.check_outputs(request.outputs)
            sequence_id, start, end = sequence_parameters(request.parameters, spec.name)
            limit, reason = self._time_limit(deadline_s, _timeout_parameter(request.parameters))
            future = scheduler.enqueue(request.inputs, sequence_id, start, end)
            expiry = asyncio.get_running_loop().call_later(limit, _expire, future, request.model, limit, reason)
            try:
                outputs = await future
            finally:
                expiry.cancel()
        except ModelserveError as exc:
            record.stats.record_failure(exc, time.perf_counter_ns() - started)
            raise
        finally:
            record.in_flight -= 1
            self.in_flight -= 1
            if not record.in_flight:
                self._eviction.model_idle()
        record.stats.record_request(True, time.perf_counter_ns() - started)
        return InferenceResponse(request.model, spec.version, {n: outputs[n] for n in wanted}, request.id)

    def _time_limit(
        self, deadline_s: float | None, requested_us: int | None, *more: tuple[float | None, str]
    ) -> tuple[float, str]:
        """How long a request may take and what sets that: REQUEST_TIMEOUT_SEC, the caller's deadline,
        ``more`` limits (a queue policy's), the request's ``timeout`` parameter; the soonest, the first of
        equals, each where it applies (not None)."""
        chosen: tuple[float, str] = (self._request_timeout_s, "REQUEST_TIMEOUT_SEC")
        requested = (None if requested_us is None else requested_us / 1e6, "the request's timeout parameter")
        for seconds, why in ((deadline_s, "the caller's deadline"), *more, requested):
            if seconds is not None and seconds < chosen[0]:
                chosen = (seconds, why)
        return chosen

    def _hit(self, record: ModelVersion, request: InferenceRequest, hit: Arrays, looked_up: int) -> InferenceResponse:
        """Answer from the response cache: counted as a success and a hit, never as a run."""
        spec = record.spec
        assert spec is not None
        now = time.perf_counter_ns()
        record.last_used_ns = now
        record.stats.cache_hit.add(now - looked_up)
        record.stats.record_request(True, now - looked_up)
        if self._observer is not None:
            self._observer.observe_cache(record.name, True)
        if self.advisor is not None:
            self.advisor.arrived(request.model, time.time())
        return InferenceResponse(request.model, spec.version, dict(hit), request.id)

    def _store(self, record: ModelVersion, batcher: Batcher, key: bytes, outputs: Arrays, lookup_ns: int) -> None:
        """Keep a computed answer in the response cache: a miss, counted with its lookup and its store."""
        assert self.cache is not None
        stored = time.perf_counter_ns()
        self.cache.put(key, record.name, batcher, outputs)
        record.stats.cache_miss.add(lookup_ns + time.perf_counter_ns() - stored)
        if self._observer is not None:
            self._observer.observe_cache(record.name, False)


def _timeout_parameter(parameters: dict[str, object]) -> int | None:
    """The V2 ``timeout`` request parameter: Triton's microseconds, None where 0 or absent."""
    value = parameters.get("timeout")
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter 'timeout' is {value!r}; send a whole number of microseconds (0: no timeout)")
    return value


def _expire(future: asyncio.Future[Arrays], model: str, limit: float, reason: str) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded(f"model '{model}' did not answer within {limit:g} s ({reason})"))

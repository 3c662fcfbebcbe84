"""The composition root: builds the thread pool, ModelManager, metrics and protocols, and wires them.

Nothing else in the package creates long-lived services; everything is passed in from here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import mark_process_dead
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelserve import __version__
from modelserve.config import ModelControlMode, PrewarmPolicy, Settings
from modelserve.cpus import background_threads
from modelserve.errors import ModelserveError, StoreUnavailable
from modelserve.history import from_settings as history_from_settings
from modelserve.models.budget import MemoryBudget
from modelserve.models.cache import ResponseCache
from modelserve.models.manager import ModelManager
from modelserve.models.memory import MIB, MemoryWatchdog, memory_limit_bytes, rss_bytes
from modelserve.models.spec import BatchingDefaults
from modelserve.observability.gpu import device_memory, device_name
from modelserve.observability.logging import configure_logging
from modelserve.observability.metrics import Metrics, multiprocess_dir
from modelserve.observability.tracing import Tracing
from modelserve.prewarm.live import POLICIES, LivePrewarmer
from modelserve.protocol import (
    console,
    debug,
    generate,
    health,
    openai,
    openapi,
    rest_v1,
    rest_v2,
    rollouts,
)
from modelserve.protocol import prewarm as prewarm_api
from modelserve.protocol.errors import OPENAI_PATHS, error_json, error_response, openai_error, validation_problems
from modelserve.protocol.shared_memory import SharedMemory
from modelserve.regions.cost_watch import CostWatch, watch_costs
from modelserve.regions.prices import load_prices
from modelserve.regions.probes import prober_from_settings
from modelserve.regions.usage import UsageRecorder, UsageSampler
from modelserve.repository.llm import LLMDefaults
from modelserve.repository.overrides import Overrides
from modelserve.repository.remote import open_repository
from modelserve.rollout.service import from_settings as rollouts_from_settings
from modelserve.server.asgi import FrontDoor
from modelserve.server.auth import Guard
from modelserve.server.grpc_server import start_grpc
from modelserve.server.lifecycle import Drain
from modelserve.server.state import ServerState

log = logging.getLogger("modelserve.server")

SHED_INTERVAL_S = 5.0


def create_app(settings: Settings, *, load_before_serving: bool = False, tracing: Tracing | None = None) -> FrontDoor:
    """One server: its models, metrics and HTTP routes.

    By default models load in the background after start, so liveness answers at once and readiness
    turns 200 when loading has finished. Worker processes sharing a port load before serving instead:
    a worker accepts no connection until its models are ready, so none is sent to a half-loaded one.
    Tracing follows OpenTelemetry's environment unless a ``tracing`` is passed in.
    """
    tracing = tracing or Tracing.from_environment(settings.trace_sample_rate)
    executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
    background = background_threads(settings.inference_threads, "inference-background")
    metrics = Metrics(CollectorRegistry())
    mode = settings.model_control_mode
    manager = ModelManager(
        open_repository(settings.model_repository, settings.model_cache_dir),
        executor,
        background=background,
        defaults=BatchingDefaults(
            settings.max_batch_size, settings.batch_timeout_ms, settings.max_queue_size, settings.inline_inference_us
        ),
        load_timeout_s=settings.model_load_timeout,
        request_timeout_s=settings.request_timeout_sec,
        control_enabled=mode is ModelControlMode.EXPLICIT,
        on_demand=mode is ModelControlMode.ON_DEMAND,
        budgets=memory_budgets(settings),
        breaker_failures=settings.circuit_breaker_failures,
        breaker_cooldown_s=settings.circuit_breaker_cooldown_sec,
        max_in_flight=settings.max_inflight_requests,
        watchdog=MemoryWatchdog(int(settings.memory_soft_limit_mb * MIB), int(settings.memory_hard_limit_mb * MIB)),
        observer=metrics,
        tracer=tracing.tracer,
        cache=response_cache(settings, metrics),
        # Hidden, so that a MODEL_CACHE_DIR that is also the repository does not list it as a model.
        overrides=Overrides(settings.model_cache_dir / ".overrides"),
        llm_defaults=LLMDefaults(settings.max_num_seqs, settings.quantization, settings.vllm_gpu_memory_utilization),
    )
    startup = ["*"] if mode in (ModelControlMode.NONE, ModelControlMode.POLL) else settings.load_models
    required = tuple(name for name in startup if name != "*")
    prewarmer = prewarmer_for(settings, manager, metrics)
    rollout = rollouts_from_settings(settings, manager, metrics.rollouts)
    usage = UsageRecorder()  # what each model version used, written with the traffic history
    history = history_from_settings(settings, on_dropped=metrics.observe_history_dropped, companions=[usage])
    sampler = (
        UsageSampler(manager.every_version, usage, settings.region, device_name()) if history is not None else None
    )
    costs = cost_watch(settings) if history is not None else None
    prober = prober_from_settings(settings, metrics.registry)  # the other regions, as this one sees them
    state = ServerState(
        settings=settings,
        manager=manager,
        metrics=metrics,
        tracing=tracing,
        required=required,
        history=history.recorder if history else None,
    )
    shared_memory = SharedMemory()  # the protocols share the regions clients register
    guard = Guard.from_settings(settings)
    if guard is not None:
        log.info("authentication on: %s", guard.summary())

    async def load_initial_models() -> None:
        await rollout.restore()  # before loading: a rollout says which versions of its model to load
        try:
            await manager.start(startup)
        except ModelserveError as exc:
            state.startup_error = exc.message
            log.error("startup loading failed: %s", exc.message)
            return
        await rollout.resume()
        state.ready = True
        log.info("ready: %d model version(s) serving", len(manager.ready()))

    async def share_metrics() -> None:
        # A scrape reaches one worker; the others' state gauges must be fresh in the shared files.
        while True:
            metrics.refresh(manager.ready())
            metrics.observe_memory(*manager.watchdog.reading())
            await asyncio.sleep(1)

    async def shed_memory() -> None:
        # RSS can cross the soft limit without a load (inference arenas grow): evict idle models then too.
        while True:
            await asyncio.sleep(SHED_INTERVAL_S)
            await manager.shed()

    async def prewarm(prewarmer: LivePrewarmer) -> None:
        if history is not None:  # the policy starts from last week's traffic, not from nothing
            try:
                step, now = settings.history_bucket_sec, time.time()
                events = await asyncio.to_thread(lambda: prewarmer.learn_from(history.reader(), step, now))
                log.info("pre-warming policy learnt from %d arrivals of the traffic history", events)
            except Exception as exc:  # a database that cannot be read: the policy learns from live traffic only
                log.warning("pre-warming starts without the traffic history: %s: %s", type(exc).__name__, exc)
        await prewarmer.run()

    async def poll_repository(loading: asyncio.Task[None]) -> None:
        await asyncio.gather(loading, return_exceptions=True)  # the first poll starts from what loaded at start
        while True:
            await asyncio.sleep(settings.repository_poll_secs)
            try:
                await manager.poll()
            except StoreUnavailable as exc:  # what is loaded serves on; the next poll tries again
                log.warning("poll: %s", exc.message)

    async def sample_usage(sampler: UsageSampler) -> None:
        while True:
            await asyncio.sleep(settings.history_flush_interval_sec)
            sampler.sample()

    def in_flight() -> int:
        # HTTP requests at the door and gRPC inference requests, from their arrival (a model loading on
        # demand included) to their answer.
        return door.in_flight + state.grpc_in_flight

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        Drain(state, settings.shutdown_grace_sec, in_flight).install()
        if history is not None:
            history.start()
        loading = asyncio.create_task(load_initial_models())
        if load_before_serving:  # a worker sharing the ports takes no call, HTTP or gRPC, before its models load
            await loading
        grpc_server = await start_grpc(state, shared_memory, guard)
        sharing = asyncio.create_task(share_metrics()) if multiprocess_dir() else None
        shedding = asyncio.create_task(shed_memory()) if manager.on_demand and settings.memory_soft_limit_mb else None
        prewarming = asyncio.create_task(prewarm(prewarmer)) if prewarmer is not None else None
        sampling = asyncio.create_task(sample_usage(sampler)) if sampler is not None else None
        costing = (
            asyncio.create_task(watch_costs(costs, metrics.costs.observe_costs, settings.cost_refresh_sec))
            if costs
            else None
        )
        probing = asyncio.create_task(prober.run(settings.probe_interval_sec)) if prober is not None else None
        polling = asyncio.create_task(poll_repository(loading)) if mode is ModelControlMode.POLL else None
        try:
            yield
        finally:
            state.draining = True
            for task in (shedding, prewarming, sampling, costing, probing, polling):
                if task is not None:
                    task.cancel()
            if sharing is not None:
                sharing.cancel()
                mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
            if grpc_server is not None:
                # The drain has waited for the requests in hand; a second is for their answers to leave.
                await grpc_server.stop(grace=1)
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await rollout.close()
            await manager.close()
            if sampler is not None:  # what the models used up to their unload
                sampler.sample()
            if history is not None:  # after the models: requests answered while draining are counted too
                await asyncio.to_thread(history.close)
            if costs is not None:
                await asyncio.to_thread(costs.close)
            if prober is not None:
                await prober.close()
            await asyncio.to_thread(state.access_log.close)  # the lines of the requests answered while draining
            executor.shutdown(wait=True)
            background.shutdown(wait=True)
            tracing.shutdown()

    app = FastAPI(
        title="modelserve",
        version=__version__,
        description="Open Inference Protocol (KServe V2) and the runbooks' /v1 API.",
        lifespan=lifespan,
    )
    app.include_router(rest_v2.router(state, shared_memory))
    app.include_router(rest_v1.router(state))
    openai_routes = openai.routes(state)
    app.include_router(openai_routes.api)
    app.include_router(generate.router(state))
    app.include_router(health.router(state))
    app.include_router(debug.router(state.profiler))
    app.include_router(rollouts.router(rollout))
    app.include_router(console.router(state, prewarmer))
    app.include_router(prewarm_api.router(manager, prewarmer))
    app.mount(console.ASSETS, console.assets())
    openapi.serve_document(app)
    app.add_exception_handler(ModelserveError, _error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _error)
    infer = rest_v2.infer_endpoint(state, shared_memory)
    door = FrontDoor(app, infer, rest_v1.predict_endpoint(state), state, guard, openai_routes.hot)
    return door


def response_cache(settings: Settings, metrics: Metrics) -> ResponseCache | None:
    """The server's response cache, reporting to ``metrics``; None under a budget of 0."""
    if not settings.response_cache_mb:
        return None
    return ResponseCache(
        int(settings.response_cache_mb * MIB), evicted=metrics.observe_cache_eviction, resized=metrics.cache_bytes.set
    )


def create_app_from_env() -> FrontDoor:
    """Factory for worker processes (``--workers N``): each reads the settings the parent exported."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, load_before_serving=True)


async def _error(_: Request, exc: Exception) -> Response:
    # Typed errors get their status from the protocol table; anything else is a logged 500.
    return error_response(exc)


def prewarmer_for(settings: Settings, manager: ModelManager, metrics: Metrics) -> LivePrewarmer | None:
    """The PREWARM_POLICY driving ``manager`` within its host memory budget, if one is set."""
    if settings.prewarm_policy is PrewarmPolicy.NONE:
        if settings.model_control_mode is ModelControlMode.ON_DEMAND:
            log.info("pre-warming off (PREWARM_POLICY=none): models load when a request needs them")
        return None
    budget = next(b for b in manager.budgets if b.kind == "CPU")  # the settings require it with a policy
    gpu = next((b for b in manager.budgets if b.kind == "GPU"), None)  # GPU_MEMORY_FRACTION on a GPU host
    policy = POLICIES[settings.prewarm_policy.value]()
    log.info(
        "pre-warming with the %s policy within %s (%d MiB); its plan: GET /v2/prewarm, or modelserve prewarm plan "
        "--url http://%s:%d",
        policy.name,
        budget.setting,
        budget.limit_bytes // MIB,
        "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host,  # a wildcard bind: reach it locally
        settings.http_port,
    )
    return LivePrewarmer(policy, manager, budget, observer=metrics.prewarming, gpu_budget=gpu)


def cost_watch(settings: Settings) -> CostWatch | None:
    """What prices the recorded usage for /metrics, when PRICES_FILE names a price table."""
    if settings.prices_file is None:
        return None
    return CostWatch(
        settings.history_database_url,
        load_prices(settings.prices_file),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )


def memory_budgets(settings: Settings) -> list[MemoryBudget]:
    """The budgets MODEL_MEMORY_BUDGET_MB (or _FRACTION) and GPU_MEMORY_FRACTION set, on the memory this host
    has."""
    budgets = []
    if settings.model_memory_budget_mb:
        budgets.append(
            MemoryBudget("CPU", int(settings.model_memory_budget_mb * MIB), "MODEL_MEMORY_BUDGET_MB", rss_bytes)
        )
    elif settings.model_memory_budget_fraction:
        limit = int(settings.model_memory_budget_fraction * memory_limit_bytes())
        log.info("model memory budget: %d MiB (MODEL_MEMORY_BUDGET_FRACTION of this process's limit)", limit // MIB)
        budgets.append(MemoryBudget("CPU", limit, "MODEL_MEMORY_BUDGET_FRACTION", rss_bytes))
    if settings.gpu_memory_fraction:
        if (reading := device_memory()) is None:
            log.warning("GPU_MEMORY_FRACTION is set but this host has no GPU that NVML can read: no GPU budget")
        else:
            limit = int(settings.gpu_memory_fraction * reading[1])
            budgets.append(MemoryBudget("GPU", limit, "GPU_MEMORY_FRACTION", _gpu_memory_used))
    return budgets


def _gpu_memory_used() -> int:
    reading = device_memory()
    return reading[0] if reading is not None else 0


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _refusal(request, validation_problems(exc.errors()), 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return _refusal(request, str(detail), exc.status_code, dict(exc.headers or {}))  # a 405 says which methods


def _refusal(request: Request, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """A refusal of what the routes never saw (a body that does not parse, a path or method that does not
    exist), in the shape the path's clients read: OpenAI's error object on its routes, ours elsewhere."""
    if request.url.path in OPENAI_PATHS:
        return error_json(message, status, headers, openai_error(message, status))
    return error_json(message, status, headers)

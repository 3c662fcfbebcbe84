"""``GET /health``, the Kubernetes probes and ``GET /metrics``: what the runbooks curl first during an incident.

The probes answer from memory only, so a slow model store or a busy model never fails them:
``/health/live`` says the process answers (a restart would not help otherwise), ``/health/startup``
that startup loading has finished, ``/health/ready`` that traffic is welcome now (started, not
draining, every model named at startup serving). Each says why when it answers 503.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from starlette.responses import PlainTextResponse, Response

from modelserve import __version__
from modelserve.observability.metrics import CONTENT_TYPE
from modelserve.protocol import openapi
from modelserve.protocol.http import json_response
from modelserve.server.state import ServerState


def router(state: ServerState) -> APIRouter:
    """Health and metrics routes, bound to one server's state."""
    manager = state.manager
    api = APIRouter(tags=["Operations"])
    health_answers: openapi.Responses = {
        200: {"model": openapi.Health},
        503: {"model": openapi.Health, "description": "Starting or draining"},
    }
    probe_answers: openapi.Responses = {
        200: {"model": openapi.Probe},
        503: {"model": openapi.Probe, "description": "Not yet, and why"},
    }

    @api.get(
        "/health",
        summary="Server status, loaded models and failed ones with the reason",
        responses=health_answers,
    )
    async def health() -> Response:
        # Only what the server holds: a probe must not depend on the repository's storage answering.
        failed = {r.name: r.reason for r in manager.failed()}
        if state.draining:
            status, code = "draining", 503
        elif not state.ready:
            status, code = "starting", 503
        else:
            status, code = ("degraded" if failed else "healthy"), 200
        return json_response(
            {
                "status": status,
                "models_loaded": sorted({r.name for r in manager.ready()}),
                "models_failed": failed,
                "uptime_seconds": round(time.monotonic() - state.started_at, 3),
                "version": __version__,
            },
            code,
        )

    @api.get(
        "/health/live",
        summary="Liveness probe: the process answers, below MEMORY_HARD_LIMIT_MB",
        responses=probe_answers,
    )
    async def live() -> Response:
        return _probe("live", state.not_live())

    @api.get("/health/startup", summary="Startup probe: startup loading has finished", responses=probe_answers)
    async def startup() -> Response:
        return _probe("started", state.not_started())

    @api.get(
        "/health/ready",
        summary="Readiness probe: started, not draining, required models serving",
        responses=probe_answers,
    )
    async def ready() -> Response:
        return _probe("ready", state.not_ready())

    exposing = asyncio.Lock()  # one scrape at a time reads NVML: a hung driver holds one thread, not one per scrape

    @api.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        # The manager's records belong to the loop: read them here. The exposition reads NVML and the
        # worker processes' files, either of which can stall, so it runs in a thread.
        state.metrics.refresh(manager.ready())
        state.metrics.observe_memory(*manager.watchdog.reading())
        async with exposing:
            text = await asyncio.to_thread(state.metrics.exposition)
        return Response(text, media_type=CONTENT_TYPE)

    return api


def _probe(status: str, reason: str | None) -> Response:
    if reason is None:
        return json_response({"status": status})
    return json_response({"status": "unavailable", "reason": reason}, 503)

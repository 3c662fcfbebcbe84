"""``GET /health`` and ``GET /metrics``: what the runbooks curl first during an incident."""

from __future__ import annotations

import time

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from modelserve import __version__
from modelserve.protocol.http import json_response
from modelserve.server.state import ServerState


def router(state: ServerState) -> APIRouter:
    """Health and metrics routes, bound to one server's state."""
    manager = state.manager
    api = APIRouter(tags=["Operations"])

    @api.get("/health", summary="Server status, loaded models and failed ones with the reason")
    async def health() -> Response:
        # Only what the server holds: a probe must not depend on the repository's storage answering.
        failed = {r.name: r.reason for r in manager.failed()}
        if not state.ready:
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

    @api.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        state.metrics.models_loaded.set(len(manager.ready()))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api

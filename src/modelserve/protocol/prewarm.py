"""``GET /v2/prewarm``: the pre-warming policy's last decisions, its plan, and how it reads each model
(``prewarm/report.py``). Admin scope when authentication is on: it names every model and its traffic."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.responses import Response

from modelserve.models.manager import ModelManager
from modelserve.prewarm.live import LivePrewarmer
from modelserve.prewarm.report import PrewarmReport, report
from modelserve.protocol import openapi
from modelserve.protocol.http import json_response


def router(manager: ModelManager, prewarmer: LivePrewarmer | None) -> APIRouter:
    """The route, reading ``prewarmer`` (None when PREWARM_POLICY is none: the report says so)."""
    api = APIRouter(tags=["Pre-warming"])

    @api.get(
        "/v2/prewarm",
        summary="The pre-warming policy: its last decisions with reasons, its planned loads and evictions, "
        "each model's expected next request and pattern, cold starts avoided against lru",
        responses=openapi.responses(PrewarmReport, 503),
    )
    async def prewarm() -> Response:
        names = {r.name for r in await manager.index()} if prewarmer is not None else set()
        return json_response(report(prewarmer, names, time.time()))

    return api

"""``GET /debug/profile``: a CPU profile of the running server, for the incident where it is slow and
nobody knows why (docs/RUNBOOK.md#cpu-profile). Modelled on Go's ``/debug/pprof/profile?seconds=N``.

It records only the process that answers: with ``--workers N``, each request profiles one worker.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from modelserve.observability.profiling import MAX_HZ, MAX_SECONDS, Busy, ProfileFormat, Profiler
from modelserve.protocol import openapi
from modelserve.protocol.errors import error_json

# What each format answers as; the document lists them all for the one route.
_PROFILE_CONTENT: dict[str, dict[str, str]] = {"image/svg+xml": {}, "application/json": {}, "text/plain": {}}


def router(profiler: Profiler) -> APIRouter:
    """The debug routes, recording with ``profiler``."""
    api = APIRouter(tags=["Operations"])

    @api.get(
        "/debug/profile",
        summary="Record the server's CPU for N seconds; answer a flame graph (SVG), speedscope JSON or folded stacks",
        response_class=Response,
        responses={200: {"content": _PROFILE_CONTENT, "description": "The profile"}, **openapi.errors(400, 409)},
    )
    async def profile(
        seconds: Annotated[float, Query(gt=0, le=MAX_SECONDS, description="How long to record.")] = 10.0,
        hz: Annotated[int, Query(ge=1, le=MAX_HZ, description="Samples per second, per thread.")] = 100,
        format: Annotated[ProfileFormat, Query(description="svg, speedscope or folded.")] = ProfileFormat.svg,
        idle: Annotated[bool, Query(description="Keep the samples of threads that wait.")] = False,
    ) -> Response:
        try:
            recorded = await asyncio.to_thread(profiler.record, seconds, hz, idle)
        except Busy as exc:
            return error_json(str(exc), 409)
        body, media_type = recorded.render(format)
        headers = {"Content-Disposition": f'inline; filename="modelserve-profile.{format.extension}"'}
        return Response(body, media_type=media_type, headers=headers)

    return api

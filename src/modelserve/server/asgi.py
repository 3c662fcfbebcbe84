"""The ASGI front door: inference requests go straight to their handler, everything else to FastAPI.

Under load, FastAPI's middleware stack and router cost more per request than decoding and running a
small model (measured: about a quarter of the server's CPU on the MLP at 32 clients). The two hot
routes skip them; their handlers answer every error themselves, so nothing the app's exception
handlers would do is lost. The routes stay registered in FastAPI too, for /docs and method errors.

The door also counts the HTTP requests inside, which a drain waits for, and while the server drains
it answers every request but the probes and metrics with 503, so no new work starts.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from modelserve.errors import ShuttingDown
from modelserve.protocol.errors import error_response
from modelserve.protocol.http import Endpoint
from modelserve.server.state import ServerState

_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
# What still answers while draining: the orchestrator's probes and the scrape.
_DURING_DRAIN = re.compile(r"^/(?:health(?:/.*)?|v2/health/.*|metrics)$")


class FrontDoor:
    """Route ``POST .../infer`` and ``POST /v1/predict`` directly; pass the rest to ``app``."""

    def __init__(self, app: ASGIApp, infer: Endpoint, predict: Endpoint, state: ServerState) -> None:
        self.app = app
        self._infer = infer
        self._predict = predict
        self._state = state
        self.in_flight = 0  # HTTP requests received and not yet answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._route(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._state.draining and not _DURING_DRAIN.match(scope["path"]):
            response = error_response(ShuttingDown("server is shutting down; retry the request on another replica"))
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        if scope["method"] == "POST":
            path = scope["path"]
            if path == "/v1/predict":
                await self._answer(self._predict, {**scope, "path_params": {}}, receive, send)
                return
            if match := _INFER.match(path):
                params = {"model": match[1]} if match[2] is None else {"model": match[1], "version": match[2]}
                await self._answer(self._infer, {**scope, "path_params": params}, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

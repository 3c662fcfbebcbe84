"""The ASGI front door: inference requests go straight to their handler, everything else to FastAPI.

Under load, FastAPI's middleware stack and router cost more per request than decoding and running a
small model (measured: about a quarter of the server's CPU on the MLP at 32 clients). The two hot
routes skip them; their handlers answer every error themselves, so nothing the app's exception
handlers would do is lost. The routes stay registered in FastAPI too, for /docs and method errors.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from modelserve.protocol.http import Endpoint

_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class FrontDoor:
    """Route ``POST .../infer`` and ``POST /v1/predict`` directly; pass the rest to ``app``."""

    def __init__(self, app: ASGIApp, infer: Endpoint, predict: Endpoint) -> None:
        self.app = app
        self._infer = infer
        self._predict = predict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
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

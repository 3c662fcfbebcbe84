"""The ASGI front door: credentials checked first, then inference straight to its handler, everything
else to FastAPI.

Under load, FastAPI's middleware stack and router cost more per request than decoding and running a
small model (measured: about a quarter of the server's CPU on the MLP at 32 clients), and a streamed
generation pays its middleware on every event. The hot routes (V2 infer, /v1/predict, OpenAI's two
completion routes) skip them; their handlers answer every error themselves, so nothing the app's
exception handlers would do is lost. The routes stay registered in FastAPI too, for /docs and method
errors.
Authentication sits here, before any routing and before the body is read, so it covers the hot routes
and FastAPI's alike, and a refused request costs one header lookup.

The door also counts the HTTP requests inside, which a drain waits for, and while the server drains
it answers every request but the probes and metrics with 503, so no new work starts.

Every request gets its trace id here, first (``begin_request``), so its log lines and its error
answer name one, whichever route answers it: the hot ones, FastAPI's, or the door itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelserve.errors import Forbidden, ShuttingDown, Unauthenticated
from modelserve.observability.tracing import begin_request
from modelserve.protocol.errors import error_response
from modelserve.protocol.http import Endpoint, header
from modelserve.server import auth
from modelserve.server.state import ServerState

_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
# What still answers while draining: the orchestrator's probes and the scrape.
_DURING_DRAIN = re.compile(r"^/(?:health(?:/.*)?|v2/health/.*|metrics)$")

# A hot route: its handler, its path parameters, and the protocol its requests are counted under.
Route = tuple[Endpoint, dict[str, str], str]


class FrontDoor:
    """Refuse requests without the credentials their path needs; route ``POST .../infer``,
    ``POST /v1/predict`` and the OpenAI completion routes directly; pass the rest to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        infer: Endpoint,
        predict: Endpoint,
        state: ServerState,
        guard: auth.Guard | None = None,
        completions: Mapping[str, Endpoint] | None = None,
    ) -> None:
        self.app = app
        self._infer = infer
        self._predict = predict
        self._completions = dict(completions or {})  # OpenAI's completion routes, by path
        self._state = state
        self._guard = guard
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
        begin_request(header(scope, b"traceparent"))
        if self._state.draining and not _DURING_DRAIN.match(scope["path"]):
            response = error_response(ShuttingDown("server is shutting down; retry the request on another replica"))
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        route = self._hot_route(scope)
        if self._guard is not None:
            # Inference always needs `infer`: the hot routes skip the path rules.
            needed = auth.Scope.INFER if route is not None else self._guard.http_scope(scope["path"])
            if needed is not None and (refusal := self._refusal(self._guard, scope, needed, route)) is not None:
                await refusal(scope, receive, send)
                return
        if route is None:
            await self.app(scope, receive, send)
            return
        endpoint, params, _ = route
        scope["path_params"] = params  # the server made this scope for this request alone
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    def _hot_route(self, scope: Scope) -> Route | None:
        if scope["method"] != "POST":
            return None
        path = scope["path"]
        if path == "/v1/predict":
            return self._predict, {}, "http_v1"
        if (completion := self._completions.get(path)) is not None:
            return completion, {}, "openai"
        if match := _INFER.match(path):
            params = {"model": match[1]} if match[2] is None else {"model": match[1], "version": match[2]}
            return self._infer, params, "http"
        return None

    def _refusal(self, guard: auth.Guard, scope: Scope, needed: auth.Scope, route: Route | None) -> Response | None:
        """The answer to a request its credentials do not allow, counted like other refusals; None to go on."""
        started = time.perf_counter()
        try:
            guard.check(_authorization(scope), needed)
        except (Unauthenticated, Forbidden) as exc:
            response = error_response(exc)
            if route is None:
                self._state.metrics.observe_refusal(exc)
            else:  # the model named in the path goes to the access log; metrics count it as "unknown"
                model, protocol = route[1].get("model", "unknown"), route[2]
                elapsed = time.perf_counter() - started
                self._state.finish_request(model, "", protocol, response.status_code, elapsed, exc)
            return response
        return None


def _authorization(scope: Scope) -> str | None:
    return header(scope, b"authorization")

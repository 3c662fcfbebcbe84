"""The web console: ``GET /ui``, a page of the models, the memory budget and the pre-warming policy, with
load and unload buttons, and ``GET /ui/summary``, the JSON it polls every 2 s.

The page is rendered here with the first summary in it, so it shows data without waiting for a poll; a
small script (``console/static/console.js``) then keeps it current and calls the repository API for loads
and unloads. Nothing is built and nothing is fetched from elsewhere: the page works air-gapped.

Both routes need the ``admin`` scope when authentication is on (``server/auth.py``), as the control
calls the buttons make do. A browser sends no key when it opens a page, so its way in is
``/ui/static/signin.html``: the script, styles and that page are files of the package, open like the
API's documentation, and hold no data; it keeps the admin key in the tab's ``sessionStorage`` and
sends it with every call.
"""

from __future__ import annotations

import string
from importlib import resources

import orjson
from fastapi import APIRouter
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from modelserve import __version__
from modelserve.console.figures import Summary, Window, summary
from modelserve.prewarm.live import LivePrewarmer
from modelserve.protocol import openapi
from modelserve.protocol.http import json_response
from modelserve.server.state import ServerState

ASSETS = "/ui/static"
_PAGE = string.Template(resources.files("modelserve.console").joinpath("page.html").read_text(encoding="utf-8"))


def router(state: ServerState, prewarmer: LivePrewarmer | None) -> APIRouter:
    """The console's routes, reading ``state``'s models and metrics and ``prewarmer``'s plan."""
    api = APIRouter(tags=["Console"])
    window = Window(state.metrics)
    auth = "on" if state.settings.auth_enabled else "off"

    @api.get(
        "/ui",
        summary="The web console: models, memory budget, pre-warming; load and unload buttons",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}}, **openapi.errors(503)},
    )
    async def page() -> Response:
        figures = await summary(state.manager, window, prewarmer)
        return HTMLResponse(render(figures, auth))

    @api.get(
        "/ui/summary",
        summary="What the web console shows: each version's state, memory and last minute of traffic, "
        "the memory budgets and their occupants, the pre-warming policy's expected requests",
        responses=openapi.responses(Summary, 503),
    )
    async def figures() -> Response:
        return json_response(await summary(state.manager, window, prewarmer))

    return api


def assets() -> StaticFiles:
    """The console's script, styles and sign-in page, served from the installed package."""
    return StaticFiles(packages=[("modelserve.console", "static")])


def render(figures: Summary, auth: str) -> str:
    """The page with ``figures`` in it as JSON the script reads. ``<`` is escaped so that no text from a
    model's name or reason can close the script element."""
    initial = orjson.dumps(figures).decode().replace("<", "\\u003c")
    return _PAGE.substitute(auth=auth, version=__version__, initial=initial)

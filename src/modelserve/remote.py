"""How the command line talks to a running server: the ``--url`` and ``--token`` options every client
command shares, and one call that turns a refusal into the server's own message and a non-zero exit."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

from modelserve.bench.warmup import error_of
from modelserve.terminal import err

DEFAULT_URL = "http://127.0.0.1:8000"
URL = Annotated[str, typer.Option(envvar="MODELSERVE_URL", help="Base URL of the running server.")]
Token = Annotated[
    str | None,
    typer.Option(envvar="MODELSERVE_TOKEN", help="API key or JWT sent as a bearer token, when the server needs one."),
]
AdminToken = Annotated[
    str | None,
    typer.Option(envvar="MODELSERVE_TOKEN", help="API key or JWT with the admin scope, when the server needs one."),
]


def auth(token: str | None) -> dict[str, str]:
    """The header that carries ``token``, or none."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def call(method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> Any:
    """The JSON (or text) the server answers; exits 1 with its error message when it refuses or cannot be
    reached."""
    try:
        response = httpx.request(method, url, headers=auth(token), json=body, timeout=300)
    except httpx.HTTPError as exc:
        err.print(f"cannot reach {url}: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        err.print(f"{response.status_code}: {error_of(response)}", style="red", markup=False, highlight=False)
        raise typer.Exit(1)
    try:
        return response.json() if response.content else {}
    except ValueError:
        return response.text

"""Small HTTP helpers shared by the REST protocols: bounded body reading, JSON answers, versions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelserve.errors import InvalidInput, PayloadTooLarge

# A request handler that answers every error itself: what the ASGI front door calls directly.
Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(document: Any, status: int = 200) -> Response:
    """A JSON response serialised with orjson (numpy arrays included)."""
    return Response(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 from Content-Length before reading, or while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds MAX_INPUT_SIZE_MB ({limit} bytes)")
        return await request.body()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds MAX_INPUT_SIZE_MB ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def hang_up(request: Request) -> Callable[[], Awaitable[None]]:
    """A wait for the client to close the connection, for use once the body has been read (the
    server then answers ``receive`` with ``http.disconnect`` only when the client has gone)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


async def json_body(request: Request, limit: int) -> Any:
    """A small JSON control body; empty means ``{}``."""
    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None

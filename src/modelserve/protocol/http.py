"""Small HTTP helpers shared by the REST protocols: bounded body reading, JSON answers, versions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelserve.errors import ClientDisconnected, InvalidInput, PayloadTooLarge

# A request handler that answers every error itself: what the ASGI front door calls directly.
Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(document: Any, status: int = 200) -> Response:
    """A JSON response serialised with orjson (numpy arrays included)."""
    return Response(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 from Content-Length before reading, or while streaming.

    Read from ``receive`` itself: Starlette's ``body()`` builds a header table and a stream around the
    same messages, a few microseconds that the inference routes pay on every request."""
    declared = header(request.scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds MAX_INPUT_SIZE_MB ({limit} bytes)")
    chunks: list[bytes] = []
    total, more = 0, True
    while more:
        message = await request.receive()
        if message["type"] != "http.request":  # http.disconnect: the caller left before sending it all
            raise ClientDisconnected("the caller hung up before its request body arrived")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds MAX_INPUT_SIZE_MB ({limit} bytes)")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the header ``name`` (lower-case bytes, as ASGI gives names), or None: one pass
    over the request's headers, where Starlette's ``Headers`` builds a table first."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class RawResponse(Response):
    """A 200 answer given its headers whole: what ``Response.__init__`` works out (the length, the content
    type's charset, a header table) the inference routes know already, on every request.

    Sent in one write where the server is uvicorn: its request cycle writes the status line and headers,
    then the body, each to the socket at once, two system calls where one does; and a server killed
    between the two leaves a proxy (HAProxy) holding a head it has passed on and cannot retry. Here the
    cycle's transport is lent a gatherer for the two sends, and what they wrote leaves together."""

    def __init__(self, body: bytes, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", content_type), *headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if not callable(getattr(transport, "write", None)):  # not uvicorn's cycle: the ASGI way
            await super().__call__(scope, receive, send)
            return
        gathered = _Gathered(transport)
        cycle.transport = gathered  # type: ignore[union-attr]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            cycle.transport = transport  # type: ignore[union-attr]
            gathered.release()


class _Gathered:
    """What uvicorn's request cycle writes while it holds this in its transport's place, kept for one
    write of the real transport; a close it asks for (a connection not kept alive) follows that write."""

    def __init__(self, transport: Any) -> None:  # uvloop's and asyncio's transports, which share no base
        self._transport = transport
        self._parts: list[bytes] = []
        self._close = False

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def close(self) -> None:
        self._close = True

    def is_closing(self) -> bool:
        return self._close or self._transport.is_closing()

    def release(self) -> None:
        if self._parts and not self._transport.is_closing():
            self._transport.write(b"".join(self._parts))
        if self._close:
            self._transport.close()


def hang_up(request: Request) -> Callable[[], bool] | None:
    """Whether the client has closed the connection, read from uvicorn's request cycle: its
    ``disconnected`` flag, set when the connection is lost (test_disconnect holds uvicorn to it). None
    under a server that keeps no such flag (Starlette's test client): nothing is then watched."""
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not isinstance(getattr(cycle, "disconnected", None), bool):
        return None
    return lambda: bool(cycle.disconnected)


async def json_body(request: Request, limit: int) -> Any:
    """A small JSON control body; empty means ``{}``."""
    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None

"""An inference answer leaves uvicorn in one write: head and body together.

Driven through uvicorn's own httptools protocol, the one the server runs, with a transport that
records what is written to it in place of a socket: if uvicorn changes how its request cycle writes,
this fails rather than the answers quietly going out in two pieces again."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from modelserve.protocol.http import RawResponse
from tests.waiting import until

BODY = b'{"outputs": []}'


class RecordingTransport(asyncio.Transport):
    """What a socket would have been sent, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await RawResponse(BODY, b"application/json")(scope, receive, send)


async def served(request: bytes) -> RecordingTransport:
    config = Config(app=answer, http="httptools", log_config=None, lifespan="off")
    protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await until(lambda: bool(transport.writes), "an answer written")
    await asyncio.sleep(0)
    return transport


async def test_head_and_body_leave_in_one_write() -> None:
    transport = await served(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")

    assert len(transport.writes) == 1, transport.writes
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n" + BODY)
    assert not transport.closed


async def test_a_connection_not_kept_alive_closes_after_its_one_write() -> None:
    request = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    transport = await served(request)

    assert len(transport.writes) == 1
    assert transport.closed

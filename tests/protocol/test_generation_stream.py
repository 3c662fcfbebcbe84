"""A generation's event stream is accounted for whether or not its body ever starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from starlette.types import Message

from modelserve.protocol.generation import GenerationStream

SCOPE = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}


class Events:
    """An event stream that records whether its ``finally`` ran."""

    def __init__(self) -> None:
        self.closed = False

    async def __call__(self) -> AsyncGenerator[bytes]:
        try:
            yield b"data: {}\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            self.closed = True


async def receive() -> Message:
    await asyncio.Event().wait()  # the caller sends nothing more
    return {"type": "http.disconnect"}


def test_a_caller_gone_before_the_first_byte_is_abandoned_not_leaked() -> None:
    events, abandoned = Events(), []

    async def gone(message: Message) -> None:
        raise OSError("connection reset by peer")

    stream = GenerationStream(events(), lambda: abandoned.append(True))
    with pytest.raises(OSError, match="reset"):  # the ASGI server's to handle, as for any response
        asyncio.run(stream(SCOPE, receive, gone))
    assert abandoned == [True]
    assert not events.closed  # never started: its own finally could not have done the work


def test_a_stream_that_ran_is_closed_by_its_own_events_and_not_abandoned() -> None:
    events, abandoned, sent = Events(), [], []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(GenerationStream(events(), lambda: abandoned.append(True))(SCOPE, receive, send))
    assert abandoned == []
    assert events.closed
    assert [m.get("body") for m in sent if m["type"] == "http.response.body" and m.get("body")] == [
        b"data: {}\n\n",
        b"data: [DONE]\n\n",
    ]

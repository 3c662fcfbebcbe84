"""A closed-loop load generator: N clients, each sending its next request as soon as the last is answered.

The client must cost less than the server it measures, on the same two cores. So requests are encoded
once, up front: HTTP goes out as pre-built HTTP/1.1 bytes on keep-alive asyncio streams (a general
client such as httpx spends more CPU per request than the server does), and gRPC sends pre-serialised
messages through a channel with no (de)serialisers. Every run is bounded by a duration and a count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import grpc
import numpy as np

Send = Callable[[], Awaitable[bool]]


class Target(Protocol):
    """What the clients load: each opens a session, a send function (True when answered) and a closer."""

    async def session(self) -> tuple[Send, Callable[[], Awaitable[None]]]: ...


@dataclass
class LoadResult:
    """What a run measured: answered requests, failures, and each success's latency in seconds."""

    clients: int
    seconds: float
    samples_per_request: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def requests_per_second(self) -> float:
        """Successful requests per second."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def inferences_per_second(self) -> float:
        """Samples inferred per second (requests times the batch each carries)."""
        return self.requests_per_second * self.samples_per_request

    def percentile_ms(self, q: float) -> float:
        """A latency percentile in milliseconds."""
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


class HttpTarget:
    """One pre-encoded HTTP request, sent on keep-alive connections."""

    def __init__(self, url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def session(self) -> tuple[Send, Callable[[], Awaitable[None]]]:
        """A connection's send function (True when answered 200) and its closer."""
        reader, writer = await asyncio.open_connection(self.host, self.port)

        async def send() -> bool:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            return status == 200

        async def close() -> None:
            writer.close()
            await writer.wait_closed()

        return send, close


class GrpcTarget:
    """One pre-serialised ModelInferRequest. Each client has its own channel, as separate clients do,
    so the load spreads over server processes sharing the port (the kernel balances connections)."""

    METHOD = "/inference.GRPCInferenceService/ModelInfer"

    def __init__(self, address: str, message: bytes, metadata: tuple[tuple[str, str], ...] | None = None) -> None:
        self.address = address
        self.message = message
        self.metadata = metadata

    async def session(self) -> tuple[Send, Callable[[], Awaitable[None]]]:
        # A local subchannel pool: otherwise gRPC shares one connection between channels to the same target.
        options = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
        channel = grpc.aio.insecure_channel(self.address, options=options)
        call = channel.unary_unary(self.METHOD)

        async def send() -> bool:
            try:
                await call(self.message, metadata=self.metadata)
            except grpc.aio.AioRpcError:
                return False
            return True

        async def close() -> None:
            await channel.close()

        return send, close


async def run_load(
    target: Target,
    clients: int,
    duration_s: float,
    *,
    warmup_s: float = 1.0,
    max_requests: int = 10_000_000,
    samples_per_request: int = 1,
) -> LoadResult:
    """Drive ``clients`` closed loops for a warm-up, then measure for ``duration_s`` (or ``max_requests``)."""
    result = LoadResult(clients, 0.0, samples_per_request)
    sessions = [await target.session() for _ in range(clients)]
    measuring = False
    stop_at = time.perf_counter() + warmup_s + duration_s
    budget = max_requests

    async def client(send: Send) -> None:
        nonlocal budget
        while time.perf_counter() < stop_at and budget > 0:
            started = time.perf_counter()
            ok = await send()
            if measuring:
                budget -= 1
                if ok:
                    result.latencies.append(time.perf_counter() - started)
                else:
                    result.errors += 1

    loops = [asyncio.create_task(client(send)) for send, _ in sessions]
    await asyncio.sleep(warmup_s)
    measuring, began = True, time.perf_counter()
    await asyncio.gather(*loops)
    result.seconds = time.perf_counter() - began
    for _, close in sessions:
        await close()
    return result

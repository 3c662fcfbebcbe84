"""The soak's traffic: closed-loop clients, the load/unload churn, bad requests at a low rate, and the
tally of every answer by time window.

Clients send pre-encoded bytes (HTTP/1.1 on keep-alive asyncio streams, gRPC through a channel with no
(de)serialisers), as `modelserve bench` does, so the soak's own CPU stays well below the server's on
the same cores. Every loop stops at the deadline and every request has a timeout: a server that stops
answering ends the soak as failures, never as a hang.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import grpc

from benchmarks.soak_cases import FAILURES, Answer, Outcome, Request, Verdict
from modelserve.bench.loadgen import GrpcTarget

# Failures kept in full for the report; the rest are only counted.
KEPT_FAILURES = 20


@dataclass
class Window:
    """One time window: every good answer's latency (seconds) and every answer's (outcome, code)."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    answers: Counter[tuple[Outcome, str]] = field(default_factory=Counter)


class Tally:
    """Every answer of a run of ``seconds`` from ``began`` (a perf_counter reading), by window of
    ``window_s``; answers that arrive after the deadline count in the last window."""

    def __init__(self, began: float, seconds: float, window_s: float) -> None:
        self.began, self.window_s = began, window_s
        self.last_window = max(0, math.ceil(seconds / window_s) - 1)
        self.windows: list[Window] = []
        self.failures: list[str] = []

    def record(self, verdict: Verdict, started: float, what: str, timed: bool = True) -> None:
        """Count an answer; its latency counts when it is good and ``timed`` (not a load/unload call)."""
        now = time.perf_counter()
        index = min(int((now - self.began) // self.window_s), self.last_window)
        while len(self.windows) <= index:
            self.windows.append(Window())
        window = self.windows[index]
        window.answers[verdict.outcome, verdict.code] += 1
        if verdict.outcome is Outcome.OK and timed:
            window.latencies.append(now - started)
        if verdict.outcome in FAILURES and len(self.failures) < KEPT_FAILURES:
            self.failures.append(f"{now - self.began:7.1f} s {what}: {verdict.outcome} {verdict.code} {verdict.detail}")

    def totals(self) -> Counter[tuple[Outcome, str]]:
        """Answers of the whole run by (outcome, code)."""
        total: Counter[tuple[Outcome, str]] = Counter()
        for window in self.windows:
            total.update(window.answers)
        return total


class HttpConnection:
    """A keep-alive HTTP/1.1 connection for pre-encoded requests; reopened after any failure or close."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> Answer:
        """Send one request, read its whole answer."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12].decode()
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = await _chunked(reader)
            else:
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        except BaseException:
            self.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        binary = headers.get(b"inference-header-content-length")
        return Answer(status, body, int(binary) if binary is not None else None)

    def close(self) -> None:
        """Drop the connection; the next exchange opens a new one."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")
    return b"".join(chunks)


class GrpcConnection:
    """A gRPC channel of its own (a local subchannel pool: no connection shared with other clients)."""

    def __init__(self, address: str) -> None:
        options = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.call = self.channel.unary_unary(GrpcTarget.METHOD)

    async def exchange(self, message: bytes) -> Answer:
        """Send one ModelInferRequest; an error status is an answer, its details the body."""
        try:
            body = await self.call(message)
        except grpc.aio.AioRpcError as exc:
            return Answer(f"grpc {exc.code().name}", (exc.details() or "").encode())
        return Answer("grpc OK", bytes(body))


class Client:
    """One client's connections (HTTP opened on first use, gRPC likewise), sending and recording requests."""

    def __init__(self, url: str, grpc_address: str, tally: Tally, timeout: float) -> None:
        self.http = HttpConnection(url)
        self.grpc_address, self.tally, self.timeout = grpc_address, tally, timeout
        self._grpc: GrpcConnection | None = None

    async def send(self, request: Request, timed: bool = True) -> Verdict:
        """Send ``request``, judge and record its answer; a failure to get one is a transport error."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                if request.grpc:
                    if self._grpc is None:
                        self._grpc = GrpcConnection(self.grpc_address)
                    answer = await self._grpc.exchange(request.payload)
                else:
                    answer = await self.http.exchange(request.payload)
        except TimeoutError:
            verdict = Verdict(Outcome.TRANSPORT, "timeout", f"no answer within {self.timeout:g} s")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            verdict = Verdict(Outcome.TRANSPORT, type(exc).__name__, str(exc))
        else:
            verdict = _transport_or(request.judge(answer), answer)
        self.tally.record(verdict, started, request.what, timed)
        return verdict

    async def close(self) -> None:
        """Close both connections, waiting at most a few seconds for gRPC's."""
        self.http.close()
        if self._grpc is not None:
            try:
                async with asyncio.timeout(5):
                    await self._grpc.channel.close()
            except TimeoutError:
                pass


def _transport_or(verdict: Verdict, answer: Answer) -> Verdict:
    # gRPC reports a lost connection or a missed deadline as a status; the server's own refusals of
    # these codes name a model, so an unexplained one is the transport's.
    lost = answer.code in ("grpc UNAVAILABLE", "grpc DEADLINE_EXCEEDED", "grpc CANCELLED")
    if verdict.outcome is Outcome.UNEXPECTED and lost and "model" not in answer.error():
        return Verdict(Outcome.TRANSPORT, answer.code, answer.error())
    return verdict


async def closed_loop(client: Client, requests: Sequence[Request], deadline: float) -> None:
    """Send ``requests`` in turn, each as soon as the last is answered, until ``deadline`` (perf_counter);
    after a transport error, a pause, so that a server that is gone is not called in a tight loop."""
    sent = 0
    while time.perf_counter() < deadline:
        verdict = await client.send(requests[sent % len(requests)])
        if verdict.outcome is Outcome.TRANSPORT:
            await asyncio.sleep(0.1)
        sent += 1


async def paced(
    client: Client, requests: Sequence[Request], interval: float, deadline: float, fresh: bool = False
) -> None:
    """Send ``requests`` in turn, one every ``interval`` seconds, until ``deadline``; with ``fresh``, each
    on a new HTTP connection (a refused request may leave its connection unusable)."""
    sent = 0
    while time.perf_counter() < deadline:
        await client.send(requests[sent % len(requests)])
        if fresh:
            client.http.close()
        sent += 1
        await asyncio.sleep(interval)


async def churn(client: Client, controls: Sequence[tuple[Request, Request]], interval: float, deadline: float) -> None:
    """Every ``interval`` seconds, unload the churned model or load it again, through each (unload, load)
    pair of ``controls`` in turn, while a whole interval remains before ``deadline``."""
    step = 0
    while time.perf_counter() + interval < deadline:
        await asyncio.sleep(interval)
        unload, load = controls[(step // 2) % len(controls)]
        await client.send(load if step % 2 else unload, timed=False)
        step += 1

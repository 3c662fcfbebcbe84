"""The floor of the serving stack: servers that answer every request with fixed bytes and do nothing else.

    .venv/bin/python -m benchmarks.echo KIND PORT RESPONSE_FILE

benchmarks/serving.py starts them itself (``echo_server``) with what modelserve answered.

The HTTP echo (``http``) is uvicorn with uvloop and httptools and a bare ASGI callable, the stack
modelserve's infer route runs on. The gRPC echoes are every Python gRPC server worth comparing with:
grpc.aio on uvloop (``grpc``, modelserve's stack) and grpc's thread-pool server (``grpc-sync``, 8
threads, or ``grpc-sync-N`` with N), each with a generic handler that neither parses the request nor
builds a response; none is the cheapest everywhere, so a benchmark takes the best of ``GRPC_KINDS``.
Each answers ModelInfer with the bytes modelserve answered to the same request, and each message of a
ModelStreamInfer stream with the same answer in a stream's envelope, so the client does the same work
against both: the gap between the echo and modelserve is what decoding, validating, batching,
inference and encoding cost.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from tritonclient.grpc import service_pb2

from benchmarks.startup import free_port

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
METHOD = "/inference.GRPCInferenceService/ModelInfer"
SERVICE = "inference.GRPCInferenceService"
GRPC_KINDS = ("grpc", "grpc-sync", "grpc-sync-2", "grpc-sync-4")  # the floor is the best of these
SYNC_THREADS = 8  # grpc-sync without a count


def http_app(body: bytes) -> App:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    reply = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # read the whole request, as any server must
            more = (await receive()).get("more_body", False)
        await send(start)
        await send(reply)

    return app


def _stream_answer(body: bytes) -> bytes:
    """What a ModelStreamInfer stream answers to one request: the unary answer in the stream's envelope."""
    envelope = service_pb2.ModelStreamInferResponse(infer_response=service_pb2.ModelInferResponse.FromString(body))
    answer: bytes = envelope.SerializeToString()
    return answer


def _handler(body: bytes, sync: bool) -> grpc.GenericRpcHandler:
    streamed = _stream_answer(body)
    if sync:

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            return body

        def answer_each(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            return (streamed for _ in requests)

    else:

        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[misc]
            return body

        async def answer_each(  # type: ignore[misc]
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            async for _ in requests:
                yield streamed

    methods = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(answer),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(answer_each),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def serve_grpc_aio(port: int, body: bytes) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers((_handler(body, sync=False),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_grpc_sync(port: int, body: bytes, threads: int = SYNC_THREADS) -> None:
    """grpc's thread-pool server. Each open stream holds one of its threads: stream clients beyond
    ``threads`` wait for one to close."""
    pool = futures.ThreadPoolExecutor(max_workers=threads)
    server = grpc.server(pool, options=[("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers((_handler(body, sync=True),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def sync_threads(kind: str) -> int | None:
    """The thread count of a ``grpc-sync`` or ``grpc-sync-N`` kind; None for any other kind."""
    if kind == "grpc-sync":
        return SYNC_THREADS
    count = kind.removeprefix("grpc-sync-")
    return int(count) if count != kind and count.isdigit() and int(count) > 0 else None


@dataclass(frozen=True)
class Echo:
    """A running echo server: where to reach it (a URL for HTTP, host:port for gRPC), and its process id,
    whose CPU time a benchmark reads."""

    kind: str
    address: str
    pid: int


@contextmanager
def echo_process(kind: str, response: bytes) -> Iterator[Echo]:
    """An echo server of ``kind`` answering ``response``, in a process of its own, until the block ends."""
    if kind not in ("http", "grpc") and sync_threads(kind) is None:
        raise ValueError(f"unknown echo server {kind!r}: http, grpc, grpc-sync or grpc-sync-N")
    port = free_port()
    with tempfile.NamedTemporaryFile() as body:
        body.write(response)
        body.flush()
        process = subprocess.Popen([sys.executable, "-m", "benchmarks.echo", kind, str(port), body.name])
        try:
            _wait_listening(process, port)
            address = f"http://127.0.0.1:{port}" if kind == "http" else f"127.0.0.1:{port}"
            yield Echo(kind, address, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def echo_server(kind: str, response: bytes) -> Iterator[str]:
    """An echo server of ``kind`` answering ``response``: its address (a URL for HTTP) until the block ends."""
    with echo_process(kind, response) as echo:
        yield echo.address


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"echo server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise SystemExit("echo server not listening within 30 s")


def main() -> None:
    kind, port, response = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]).read_bytes()
    if kind == "http":
        uvicorn.run(http_app(response), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                    log_level="warning", access_log=False, lifespan="off")  # fmt: skip
    elif kind == "grpc":
        import uvloop

        uvloop.run(serve_grpc_aio(port, response))
    elif (threads := sync_threads(kind)) is not None:
        serve_grpc_sync(port, response, threads)
    else:
        raise SystemExit(f"unknown echo server {kind!r}: http, grpc, grpc-sync or grpc-sync-N")


if __name__ == "__main__":
    main()

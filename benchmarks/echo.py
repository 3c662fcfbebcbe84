"""The floor of the serving stack: servers that answer every request with fixed bytes and do nothing else.

    .venv/bin/python -m benchmarks.echo http|grpc|grpc-sync PORT RESPONSE_FILE

benchmarks/serving.py starts them itself (``echo_server``) with what modelserve answered.

The HTTP echo is uvicorn with uvloop and httptools and a bare ASGI callable, the stack modelserve's
infer route runs on; the gRPC echo is grpc.aio (modelserve's stack) or grpc's thread-pool server, with
a generic handler that neither parses the request nor builds a response. Each answers with the bytes
modelserve answered to the same request, so the client does the same work against both: the gap
between the echo and modelserve is what decoding, validating, batching, inference and encoding cost.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import uvicorn

from benchmarks.startup import free_port

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
METHOD = "/inference.GRPCInferenceService/ModelInfer"


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


def _handler(body: bytes, sync: bool) -> grpc.GenericRpcHandler:
    if sync:

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            return body

    else:

        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[misc]
            return body

    method = grpc.unary_unary_rpc_method_handler(answer)
    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": method})


async def serve_grpc_aio(port: int, body: bytes) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers((_handler(body, sync=False),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_grpc_sync(port: int, body: bytes) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers((_handler(body, sync=True),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


@contextmanager
def echo_server(kind: str, response: bytes) -> Iterator[str]:
    """An echo server of ``kind`` answering ``response``: its address (a URL for HTTP) until the block ends."""
    port = free_port()
    with tempfile.NamedTemporaryFile() as body:
        body.write(response)
        body.flush()
        process = subprocess.Popen([sys.executable, "-m", "benchmarks.echo", kind, str(port), body.name])
        try:
            _wait_listening(process, port)
            yield f"http://127.0.0.1:{port}" if kind == "http" else f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


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
    elif kind == "grpc-sync":
        serve_grpc_sync(port, response)
    else:
        raise SystemExit(f"unknown echo server {kind!r}: http, grpc or grpc-sync")


if __name__ == "__main__":
    main()

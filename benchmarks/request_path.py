"""CPU time of modelserve's own HTTP inference path, per request, without uvicorn or a network.

    .venv/bin/python -m benchmarks.request_path [--format binary|json] [--log-level info|warning]
                                                [--clients 32] [--requests 1500] [--rounds 5]
                                                [--gc-threshold 50000 20 100]

The app is built as `modelserve serve` builds it (its lifespan run, the example MLP loaded) and its
ASGI front door is called directly by ``--clients`` concurrent tasks, each sending ``--requests``
requests in a row, with the bodies tritonclient sends. The figure is the event loop's thread CPU
time per request (``time.thread_time``: the writer of the access log and the inference threads
are left out), the least and the median of the rounds. It moves by a few percent where end-to-end
throughput on this machine moves by tens: what the path costs, not what a client sees.
``--gc-threshold`` sets the cyclic garbage collector's thresholds after startup, to compare with
Python's (700, 10, 10), which the server keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvloop

from benchmarks.models import build_examples, repository_for
from modelserve.config import Settings
from modelserve.observability.logging import configure_logging
from modelserve.server.app import create_app
from modelserve.server.asgi import FrontDoor

Message = dict[str, Any]


def request(form: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """One MLP request's body and headers, in the binary extension's layout or as JSON."""
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    if form == "json":
        tensor = {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": x.reshape(-1).tolist()}
        body = orjson.dumps({"inputs": [tensor]})
        return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    described = {"name": "input", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}
    header = orjson.dumps({"inputs": [described]})
    body = header + x.tobytes()
    return body, [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(header)).encode()),
        (b"content-length", str(len(body)).encode()),
    ]


async def one(door: FrontDoor, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v2/models/mlp/infer",
        "raw_path": b"/v2/models/mlp/infer",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await door(scope, receive, send)
    if statuses != [200]:
        raise SystemExit(f"the infer route answered {statuses}")


async def measure(door: FrontDoor, args: argparse.Namespace) -> list[float]:
    """Microseconds of the loop's CPU per request, a figure per round."""
    body, headers = request(args.format)

    async def client(count: int) -> None:
        for _ in range(count):
            await one(door, body, headers)

    await asyncio.gather(*(client(200) for _ in range(args.clients)))  # warm: batch sizes, inline timing
    if args.gc_threshold:
        gc.set_threshold(*args.gc_threshold)
    rounds = []
    for _ in range(args.rounds):
        started = time.thread_time()
        await asyncio.gather(*(client(args.requests) for _ in range(args.clients)))
        rounds.append((time.thread_time() - started) / (args.clients * args.requests) * 1e6)
    return rounds


async def main(args: argparse.Namespace) -> None:
    settings = Settings(model_repository=str(repository_for("mlp")), grpc_port=0, log_level=args.log_level)
    door = create_app(settings, load_before_serving=True)
    startup: asyncio.Queue[Message] = asyncio.Queue()
    events: asyncio.Queue[Message] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(door({"type": "lifespan", "asgi": {"version": "3.0"}}, startup.get, events.put))
    if (await events.get())["type"] != "lifespan.startup.complete":
        raise SystemExit("the server did not start")
    rounds = await measure(door, args)
    await startup.put({"type": "lifespan.shutdown"})
    await events.get()
    await lifespan
    print(
        f"{args.format}, log level {args.log_level}, {args.clients} clients: {min(rounds):.1f} µs (least), "
        f"{statistics.median(rounds):.1f} µs (median of {args.rounds}) of the loop's CPU per request"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("binary", "json"), default="binary")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1500, help="per client and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gc-threshold", type=int, nargs=3, help="the collector's thresholds after startup")
    arguments = parser.parse_args()
    build_examples()
    with tempfile.TemporaryDirectory() as logs, Path(logs, "server.log").open("w") as log:
        sys.stderr = log  # the access lines, written as the server writes them
        configure_logging(arguments.log_level, "json")
        uvloop.run(main(arguments))

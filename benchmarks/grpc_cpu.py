"""Server CPU time per gRPC call: modelserve against the Python gRPC echo servers, under the same load.

    .venv/bin/python -m benchmarks.grpc_cpu [--calls 20000] [--clients 32] [--rounds 5] [--stream]
        [--echo grpc grpc-sync-4 ...] [--workers 2] [--serve-option=--OPTION=VALUE ...]

Where the load generator shares the cores with the server, and other work shares them with both,
throughput is noise; the CPU time a server process spends per call is steadier. Each round sends every
target exactly ``--calls`` ModelInfer calls (or stream messages, with ``--stream``) of the example
MLP from ``--clients`` closed-loop clients, after a warm-up, and reads the server's CPU time (user and
system, every thread of the process and of its children, from /proc) before and after. The targets
take turns within each round; the medians over the rounds are printed, with the load generator's own
CPU per call beside them. The echo servers (benchmarks/echo.py) answer the bytes modelserve answered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import uvloop

from benchmarks.echo import GRPC_KINDS, echo_process, sync_threads
from benchmarks.models import build_examples, repository_for
from benchmarks.startup import free_port, wait_ready
from modelserve.bench.loadgen import GrpcTarget
from modelserve.bench.workload import Workload

STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
WARMUP_CALLS = 2000
LIMIT_S = 300.0  # no round of one target runs longer, whatever --calls says


@dataclass
class Target:
    """A server under measurement and what each of its rounds measured."""

    name: str
    address: str
    pid: int
    server_us: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


@contextmanager
def modelserve(repository: Path, args: argparse.Namespace) -> Iterator[tuple[int, str, str]]:
    """`modelserve serve` at log level warning with ``--serve-option``s: its pid, URL and gRPC address."""
    port, grpc_port = free_port(), free_port()
    command = [
        *(sys.executable, "-m", "modelserve", "serve", "--model-repository", str(repository)),
        *("--http-port", str(port), "--grpc-port", str(grpc_port), "--workers", str(args.workers)),
        *("--log-level", "warning", *args.serve_option),
    ]
    with open(os.devnull, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output)
        try:
            wait_ready(process, f"http://127.0.0.1:{port}/v2/health/ready", 120, "modelserve")
            yield process.pid, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its children (``--workers``), all threads."""
    process = psutil.Process(pid)
    total = 0.0
    for each in (process, *process.children(recursive=True)):
        times = each.cpu_times()
        total += times.user + times.system
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(address: str, message: bytes, calls: int, clients: int, stream: bool) -> int:
    """``calls`` calls (or stream messages) from ``clients`` closed loops, each on its own connection;
    returns how many were answered before LIMIT_S."""
    options = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(clients)]
    left, answered, deadline = calls, 0, time.monotonic() + LIMIT_S

    async def unary(channel: grpc.aio.Channel) -> None:
        nonlocal left, answered
        call = channel.unary_unary(GrpcTarget.METHOD)
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            await call(message)
            answered += 1

    async def streaming(channel: grpc.aio.Channel) -> None:
        nonlocal left, answered
        call = channel.stream_stream(STREAM_METHOD)()
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            await call.write(message)
            await call.read()
            answered += 1
        await call.done_writing()

    client: Callable[[grpc.aio.Channel], Awaitable[None]] = streaming if stream else unary
    try:
        await asyncio.gather(*(client(channel) for channel in channels))
    finally:
        for channel in channels:
            await channel.close()
    return answered


def measure(target: Target, message: bytes, args: argparse.Namespace) -> None:
    uvloop.run(drive(target.address, message, WARMUP_CALLS, args.clients, args.stream))
    server, client, began = cpu_seconds(target.pid), own_cpu_seconds(), time.perf_counter()
    answered = uvloop.run(drive(target.address, message, args.calls, args.clients, args.stream))
    seconds = time.perf_counter() - began
    target.server_us.append((cpu_seconds(target.pid) - server) / answered * 1e6)
    target.client_us.append((own_cpu_seconds() - client) / answered * 1e6)
    target.rates.append(answered / seconds)
    print(f"  {target.name:22} {target.server_us[-1]:7.1f} µs server, {target.client_us[-1]:6.1f} µs client")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--calls", type=int, default=20_000, help="calls measured per target and round")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream", action="store_true", help="messages on ModelStreamInfer streams, one per client")
    parser.add_argument("--echo", nargs="*", default=None, help=f"echo servers (default: {' '.join(GRPC_KINDS)})")
    parser.add_argument("--workers", type=int, default=1, help="modelserve server processes sharing the port")
    parser.add_argument("--serve-option", action="append", default=[], help="passed to modelserve serve (repeatable)")
    args = parser.parse_args()
    kinds = args.echo if args.echo is not None else (["grpc"] if args.stream else list(GRPC_KINDS))
    if args.stream and any((sync_threads(k) or args.clients) < args.clients for k in kinds):
        parser.error("a thread-pool echo holds a thread per open stream: give it at least --clients threads")
    build_examples()
    with ExitStack() as stack:
        pid, url, grpc_address = stack.enter_context(modelserve(repository_for(args.model), args))
        request = Workload.from_server(url, args.model).target("grpc", url, grpc_address)
        assert isinstance(request, GrpcTarget)
        targets = [Target("modelserve", grpc_address, pid)]
        with grpc.insecure_channel(grpc_address) as channel:  # what the echo servers answer
            answer = bytes(channel.unary_unary(GrpcTarget.METHOD)(request.message))
        for kind in kinds:
            echo = stack.enter_context(echo_process(kind, answer))
            targets.append(Target(f"echo {kind}", echo.address, echo.pid))
        for run in range(args.rounds):
            print(f"round {run + 1} of {args.rounds}")
            for target in targets:
                measure(target, request.message, args)
    what = "stream message" if args.stream else "call"
    print(f"\nmedians of {args.rounds} rounds, {args.calls} {what}s each from {args.clients} clients")
    print(f"| server | server CPU µs per {what} (min to max) | load generator µs | {what}s/s |")
    print("|---|---|---|---|")
    for target in targets:
        spread = f"{min(target.server_us):.0f} to {max(target.server_us):.0f}"
        print(
            f"| {target.name} | {statistics.median(target.server_us):.0f} ({spread}) "
            f"| {statistics.median(target.client_us):.0f} | {statistics.median(target.rates):,.0f} |"
        )


if __name__ == "__main__":
    main()

"""What observability, authentication and the traffic history cost on the MLP: access logs, tracing,
API keys, JWTs and the history against a server with all of them off, in one run, plus the CPU time
metrics take per request (they cannot be turned off, so they are timed in-process) and the history's
hot-path call, timed in-process alone and while its flusher writes.

    .venv/bin/python -m benchmarks.overhead [--runs 3] [--duration 5] [--only baseline "api key" jwt history]

Each configuration is a fresh `modelserve serve` over the example repository, loaded with
`modelserve bench`'s closed-loop clients (HTTP binary and gRPC at 32 clients, HTTP binary at 1 client
for p50); configurations alternate within each run so the machine's drift spreads over all of them.
Traces go over OTLP/gRPC to a collector in this process that accepts and drops them, as a real one
on another machine would; here it shares the cores with the server, so its share is counted too.
With authentication on, every request carries its credential: an API key, or one HS256 JWT that
clients re-send (as they do until it expires), over HTTP and gRPC alike. The history writes to a
SQLite file in a temp folder, with the default flush interval.
Prints the medians and each configuration's ratio to the baseline, in throughput and in the server's own CPU
time per request (read from /proc, over the requests its metrics count), which moves less with the load
of the machine than throughput does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import uvloop
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.models import EXAMPLES, build_examples
from benchmarks.serving import start_server
from modelserve.bench.loadgen import run_load
from modelserve.bench.workload import Workload
from modelserve.history.flusher import HistoryFlusher
from modelserve.history.recorder import TrafficRecorder
from modelserve.observability.metrics import Metrics
from modelserve.server.auth import Guard, Scope, TokenVerifier, parse_api_keys

POINTS = (("http-binary", 32), ("grpc", 32), ("http-binary", 1))
API_KEY = "benchmark-api-key-0123456789abcdef"
JWT_SECRET = "benchmark-jwt-secret-of-at-least-32-bytes"
NAMES = ("baseline", "access log 100%", "access log 1%", "tracing 100%", "tracing 10%", "api key", "jwt", "history")


class _Drop(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Accepts every export and keeps nothing."""

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def collector() -> Iterator[str]:
    """An OTLP/gRPC endpoint on a free loopback port."""
    server = grpc.server(ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Drop(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def configurations(endpoint: str, history_url: str) -> dict[str, tuple[list[str], dict[str, str], str | None]]:
    """Name → (serve options, environment, the bearer token clients send)."""
    tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    quiet = ["--access-log-sample-rate", "0", "--no-traffic-history"]
    logged = ["--no-traffic-history", "--log-level", "info", "--access-log-sample-rate"]
    token = jwt.encode({"scope": "infer", "exp": int(time.time()) + 24 * 3600}, JWT_SECRET, algorithm="HS256")
    setups: dict[str, tuple[list[str], dict[str, str], str | None]] = {
        "baseline": (quiet, {}, None),
        "access log 100%": ([*logged, "1"], {}, None),
        "access log 1%": ([*logged, "0.01"], {}, None),
        "tracing 100%": ([*quiet, "--trace-sample-rate", "1"], tracing, None),
        "tracing 10%": ([*quiet, "--trace-sample-rate", "0.1"], tracing, None),
        "api key": (quiet, {"API_KEYS": API_KEY}, API_KEY),
        "jwt": (quiet, {"JWT_SECRET": JWT_SECRET}, token),
        "history": (["--access-log-sample-rate", "0", "--traffic-history"], {"DATABASE_URL": history_url}, None),
    }
    assert tuple(setups) == NAMES
    return setups


def metrics_cost_us(requests: int = 200_000) -> float:
    """CPU microseconds metrics add to one request of one batch: the request and the batch observations."""
    metrics = Metrics(CollectorRegistry())
    started = time.process_time()
    for _ in range(requests):
        metrics.observe_request("mlp", "1", "http", 200, 0.0004, None)
        metrics.observe_batch("mlp", 1, 0.00002, [0.00001])
    return (time.process_time() - started) / requests * 1e6


def history_cost_us(database_url: str, requests: int = 200_000, rounds: int = 5) -> tuple[float, float, int]:
    """CPU microseconds of the history's hot-path call per request, in-process: alone, and while a flusher
    thread takes the buckets every millisecond and writes them to ``database_url`` (medians of ``rounds``);
    and how many writes that flusher made, so the contention measured is real."""
    models = [f"model-{i}" for i in range(8)]

    def timed(recorder: TrafficRecorder) -> float:
        # This thread's CPU only: the flusher's, when one runs, is not the hot path's.
        started = time.thread_time()
        for i in range(requests):
            recorder.record_request(models[i & 7], "1", 0.0004, None)
        return (time.thread_time() - started) / requests * 1e6

    alone, contended, writes = [], [], 0
    for _ in range(rounds):
        alone.append(timed(TrafficRecorder(60)))
        recorder = TrafficRecorder(60)
        flusher = HistoryFlusher(recorder, database_url, interval_s=3600, retention_s=0)
        flusher.flush()  # the migration, out of the count
        stop = threading.Event()

        def flushing(flusher: HistoryFlusher = flusher, stop: threading.Event = stop) -> None:
            nonlocal writes
            while not stop.wait(0.001):
                flusher.flush()
                writes += 1

        thread = threading.Thread(target=flushing)
        thread.start()
        contended.append(timed(recorder))
        stop.set()
        thread.join()
        flusher.close()
    return statistics.median(alone), statistics.median(contended), writes


def auth_cost_us(requests: int = 200_000, first_sights: int = 1_000) -> dict[str, float]:
    """CPU microseconds of the credentials check on one request, in-process, as the front door and the gRPC
    interceptor make it: an API key; a JWT the server has seen (remembered until it expires); a JWT seen for
    the first time, HS256 and RS256, whose signature and claims are verified."""
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    costs: dict[str, float] = {}

    def timed(name: str, guard: Guard, headers: list[str]) -> None:
        started = time.process_time()
        for header in headers:
            guard.check(header, Scope.INFER)
        costs[name] = (time.process_time() - started) / len(headers) * 1e6

    def fresh(key: Any, algorithm: str) -> list[str]:
        claims = {"scope": "infer", "exp": int(time.time()) + 3600}
        return [f"Bearer {jwt.encode({**claims, 'jti': str(i)}, key, algorithm)}" for i in range(first_sights)]

    hs256 = TokenVerifier(secret=JWT_SECRET.encode())
    timed("api key", Guard(parse_api_keys(API_KEY), None), [f"Bearer {API_KEY}"] * requests)
    timed("jwt, seen before", Guard([], hs256), fresh(JWT_SECRET, "HS256")[:1] * requests)
    timed("jwt HS256, first sight", Guard([], hs256), fresh(JWT_SECRET, "HS256"))
    rs256 = TokenVerifier(public_key=signer.public_key())
    timed("jwt RS256, first sight", Guard([], rs256), fresh(signer, "RS256"))
    return costs


class _Pass(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that lets every call through: what grpc.aio's interceptor machinery costs alone."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return await continuation(details)


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _grpc_call_cpu_us(interceptors: list[Any] | None, calls: int, clients: int = 16) -> float:
    server = grpc.aio.server(interceptors=interceptors)
    echo = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Call": echo}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/bench.Echo/Call")
        await asyncio.gather(*(call(b"x") for _ in range(200)))  # connection and first calls out of the count
        started = time.process_time()

        async def client() -> None:
            for _ in range(calls // clients):
                await call(b"x", metadata=(("authorization", "Bearer x"),))

        await asyncio.gather(*(client() for _ in range(clients)))
        cpu = time.process_time() - started
    await server.stop(None)
    return cpu / calls * 1e6


def interceptor_cost_us(calls: int = 4_000, rounds: int = 5) -> tuple[float, float]:
    """CPU microseconds per call of an in-process grpc.aio client and server, without an interceptor and
    with one that passes every call (medians of ``rounds``, alternating)."""
    without, passing = [], []
    for _ in range(rounds):
        without.append(asyncio.run(_grpc_call_cpu_us(None, calls)))
        passing.append(asyncio.run(_grpc_call_cpu_us([_Pass()], calls)))
    return statistics.median(without), statistics.median(passing)


def server_cpu_seconds(pid: int) -> float:
    """User and system CPU time the server process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_answered(url: str) -> float:
    """Requests the server has answered, from its own metrics: warmup ones too, as the CPU time counts them."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "model_serving_requests_total"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--only", nargs="+", choices=NAMES, help="configurations to run (the baseline always runs)")
    args = parser.parse_args()
    build_examples()

    results: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    folder = tempfile.TemporaryDirectory(prefix="modelserve-history-")
    history_url = f"sqlite:///{folder.name}/history.sqlite3"
    with collector() as endpoint:
        setups = {
            name: setup
            for name, setup in configurations(endpoint, history_url).items()
            if not args.only or name in args.only or name == "baseline"
        }
        for run in range(1, args.runs + 1):
            for name, (options, env, token) in setups.items():
                process, url, grpc_address = start_server(EXAMPLES, 1, options, env)
                try:
                    workload = Workload.from_server(url, "mlp", token=token)
                    for protocol, clients in POINTS:
                        target = workload.target(protocol, url, grpc_address)
                        cpu, answered = server_cpu_seconds(process.pid), requests_answered(url)
                        result = uvloop.run(run_load(target, clients, args.duration, warmup_s=args.warmup))
                        cpu_us = (server_cpu_seconds(process.pid) - cpu) / (requests_answered(url) - answered) * 1e6
                        assert result.errors == 0, f"{name}: {result.errors} errors"
                        point = (result.inferences_per_second, result.percentile_ms(50), cpu_us)
                        results.setdefault((name, protocol, clients), []).append(point)
                        print(
                            f"run {run}: {name:16} {protocol:11} {clients:3} clients {point[0]:9.1f} inf/s "
                            f"{cpu_us:6.1f} µs server CPU/request"
                        )
                finally:
                    process.terminate()
                    process.wait(timeout=30)

    print(f"\nMLP, one process, medians of {args.runs} runs; ratio to the baseline (all of the above off)")
    print(f"{'configuration':16} " + " ".join(f"{f'{p} {c}':>22}" for p, c in POINTS))
    base = {
        key[1:]: statistics.median(point[0] for point in points)
        for key, points in results.items()
        if key[0] == "baseline"
    }
    for name in setups:
        cells = []
        for protocol, clients in POINTS:
            points = results[(name, protocol, clients)]
            ips = statistics.median(point[0] for point in points)
            p50 = statistics.median(point[1] for point in points)
            figure = f"{ips:,.0f} ({ips / base[(protocol, clients)]:.2f})" if clients > 1 else f"p50 {p50:.3f} ms"
            cells.append(f"{figure:>22}")
        print(f"{name:16} " + " ".join(cells))
    # Clients share the cores with the server here, so throughput moves with whatever else runs; the
    # server's own CPU time per request is the steadier figure of what a configuration costs it.
    print("\nserver CPU per request (µs), medians; ratio to the baseline")
    cpu_base = {
        key[1:]: statistics.median(point[2] for point in points)
        for key, points in results.items()
        if key[0] == "baseline"
    }
    for name in setups:
        cells = []
        for protocol, clients in POINTS:
            cpu_us = statistics.median(point[2] for point in results[(name, protocol, clients)])
            cells.append(f"{f'{cpu_us:.1f} ({cpu_us / cpu_base[(protocol, clients)]:.3f})':>22}")
        print(f"{name:16} " + " ".join(cells))
    cost = metrics_cost_us()
    print(f"\nmetrics: {cost:.1f} µs of CPU per request (a request and its batch observed, in-process)")
    if any(name in setups for name in ("api key", "jwt")):
        checks = ", ".join(f"{name} {us:.1f} µs" for name, us in auth_cost_us().items())
        print(f"credentials check, CPU per request in-process: {checks}")
        without, passing = interceptor_cost_us()
        print(f"gRPC call in-process: {without:.0f} µs of CPU without an interceptor, {passing:.0f} µs with one")
    if "history" in setups:
        alone, contended, writes = history_cost_us(f"sqlite:///{folder.name}/in-process.sqlite3")
        print(
            f"traffic history, CPU per request in-process: {alone:.2f} µs alone, {contended:.2f} µs "
            f"while a flusher takes and writes the buckets every ms ({writes} writes)"
        )
    folder.cleanup()


if __name__ == "__main__":
    main()

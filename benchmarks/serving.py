"""Serving throughput and latency of modelserve against raw in-process inference and Seldon MLServer,
in one run.

    make bench     (the same as:)
    .venv/bin/python -m benchmarks.serving [--runs 3] [--duration 5] [--clients 1 8 32] [--workers 1]
                                           [--no-echo] [--no-mlserver] [--model mlp|resnet18]

Builds the models if needed, measures raw onnxruntime in this process (one thread calling
session.run back to back: the ceiling no server reaches), then starts `modelserve serve` and loads it
with `modelserve bench`'s closed-loop clients over HTTP JSON, HTTP binary and gRPC at each
concurrency; then bare echo servers on the same stacks (benchmarks/echo.py: the floor, what the HTTP
and gRPC layers cost with no work behind them), answering what modelserve answered; then MLServer
(its own venv, default settings, the same ONNX file; HTTP JSON and gRPC, as it has no binary
extension) with the same requests. Client and server share the machine's cores, as in the peers'
figures. Prints the median of the runs for each point with its ratios to raw inference, to the echo
floor and to MLServer, and writes every run to a CSV file and the medians to a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import uvloop

from benchmarks.echo import echo_server
from benchmarks.models import build_examples, repository_for
from benchmarks.peers import mlserver
from benchmarks.startup import free_port, wait_ready
from modelserve.bench.loadgen import GrpcTarget, HttpTarget, run_load
from modelserve.bench.workload import PROTOCOLS, Workload

ROOT = Path(__file__).resolve().parent.parent


def raw_inference(
    model_file: Path, inputs: dict[str, np.ndarray], seconds: float, batch: int = 1
) -> tuple[float, float]:
    """Inferences per second and p50 latency (ms) of session.run called back to back at ``batch``."""
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    inputs = {name: np.repeat(array, batch, axis=0) for name, array in inputs.items()}
    latencies = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        session.run(None, inputs)
        latencies.append(time.perf_counter() - started)
    return batch * len(latencies) / sum(latencies), float(np.median(latencies) * 1000)


def start_server(
    repository: Path,
    workers: int,
    options: list[str] | None = None,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`modelserve serve` with ``options`` after the defaults and ``env`` added to this process's
    environment. Without a ``log`` its output is discarded, so it runs at log level warning (no access
    lines to format for nothing); with one, it logs there at the level its settings say."""
    port, grpc_port = free_port(), free_port()
    command = [
        *(sys.executable, "-m", "modelserve", "serve", "--model-repository", str(repository)),
        *("--http-port", str(port), "--grpc-port", str(grpc_port), "--workers", str(workers)),
        *(("--log-level", "warning") if log is None else ()),
        *(options or []),
    ]
    environment = {**os.environ, **(env or {})}
    output = subprocess.DEVNULL if log is None else log
    process = subprocess.Popen(command, stdout=output, stderr=output, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{url}/v2/health/ready", 120, "modelserve")
    except SystemExit:
        process.kill()
        raise
    return process, url, f"127.0.0.1:{grpc_port}"


def measure(
    system: str,
    run: int,
    workload: Workload,
    url: str,
    grpc_address: str,
    protocols: list[str],
    args: argparse.Namespace,
) -> list[dict[str, object]]:
    """One server at every protocol and concurrency: a row per point."""
    rows: list[dict[str, object]] = []
    for protocol in protocols:
        for clients in args.clients:
            target = workload.target(protocol, url, grpc_address)
            result = uvloop.run(run_load(target, clients, args.duration, warmup_s=args.warmup))
            rows.append(
                {
                    "run": run,
                    "system": system,
                    "protocol": protocol,
                    "clients": clients,
                    "inf_per_s": result.inferences_per_second,
                    "p50_ms": result.percentile_ms(50),
                    "p99_ms": result.percentile_ms(99),
                    "errors": result.errors,
                }
            )
            print(f"run {run}: {system:14} {protocol:11} {clients:3} clients {result.inferences_per_second:9.1f} inf/s")
    return rows


def answer_of(target: HttpTarget | GrpcTarget) -> bytes:
    """What the server behind ``target`` answers to its request: the body an echo server replays."""
    if isinstance(target, GrpcTarget):
        with grpc.insecure_channel(target.address) as channel:
            return bytes(channel.unary_unary(GrpcTarget.METHOD)(target.message))
    head, _, body = target.request.partition(b"\r\n\r\n")
    request_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines if not line.lower().startswith(("host:", "content-length:")))
    url = f"http://{target.host}:{target.port}{request_line.split()[1]}"
    return httpx.post(url, content=body, headers=headers, timeout=60).raise_for_status().content


def measure_echo(
    run: int, workload: Workload, url: str, grpc_address: str, args: argparse.Namespace
) -> list[dict[str, object]]:
    """The echo floor at every protocol and concurrency, replaying modelserve's answers."""
    rows: list[dict[str, object]] = []
    for protocol in args.protocols:
        response = answer_of(workload.target(protocol, url, grpc_address))
        with echo_server("grpc" if protocol == "grpc" else "http", response) as address:
            rows += measure("echo", run, workload, address, address, [protocol], args)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--raw-batches", type=int, nargs="+", default=[1], help="batch sizes of the raw baseline")
    parser.add_argument("--serve-option", action="append", default=[], help="passed to modelserve serve (repeatable)")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo-server floor")
    parser.add_argument("--no-mlserver", action="store_true", help="skip the MLServer comparison")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "serving.csv")
    args = parser.parse_args()

    build_examples()
    repository = repository_for(args.model)
    model_file = repository / args.model / "1" / "model.onnx"
    ours = f"modelserve w{args.workers}"
    rows: list[dict[str, object]] = []
    for run in range(1, args.runs + 1):
        process, url, grpc_address = start_server(repository, args.workers, args.serve_option)
        try:
            workload = Workload.from_server(url, args.model)
            for batch in args.raw_batches:
                raw_ips, raw_p50 = raw_inference(model_file, workload.inputs, args.duration, batch)
                rows.append({"run": run, "system": f"raw onnxruntime b{batch}", "protocol": "in-process",
                             "clients": 1, "inf_per_s": raw_ips, "p50_ms": raw_p50, "p99_ms": float("nan"),
                             "errors": 0})  # fmt: skip
            rows += measure(ours, run, workload, url, grpc_address, args.protocols, args)
            if not args.no_echo:
                rows += measure_echo(run, workload, url, grpc_address, args)
        finally:
            process.terminate()
            process.wait(timeout=30)
        if not args.no_mlserver:  # MLServer has no binary extension: JSON and gRPC only
            peer_protocols = [p for p in args.protocols if p != "http-binary"]
            with (
                tempfile.TemporaryDirectory() as workdir,
                mlserver(args.model, model_file, Path(workdir)) as (url, grpc),
            ):
                rows += measure("mlserver", run, workload, url, grpc, peer_protocols, args)

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    raws = {
        batch: statistics.median(float(r["inf_per_s"]) for r in rows if r["system"] == f"raw onnxruntime b{batch}")  # type: ignore[arg-type]
        for batch in args.raw_batches
    }
    raw = max(raws.values())
    described = ", ".join(f"{ips:,.1f} inf/s at batch {batch}" for batch, ips in raws.items())
    print(f"\nmodel {args.model}, medians of {args.runs} runs; raw onnxruntime in-process: {described}")
    print("'vs raw' compares with the best raw figure; 'vs echo' is the share of the bare stack's rate reached")
    columns = ("inf/s", 9), ("p50 ms", 8), ("p99 ms", 8), ("vs raw", 7), ("vs echo", 7), ("vs MLServer", 11)
    print(f"{'system':14} {'protocol':12} {'clients':>7} " + " ".join(f"{name:>{width}}" for name, width in columns))
    systems = (ours, "echo", "mlserver")
    for protocol in args.protocols:
        for clients in args.clients:
            peer = _median(rows, "mlserver", protocol, clients)
            floor = _median(rows, "echo", protocol, clients)
            for system in systems:
                point = _median(rows, system, protocol, clients)
                if point is None:
                    continue
                ips, p50, p99, errors = point
                mine = system == ours
                versus_echo = f"{ips / floor[0]:7.3f}" if floor and mine else " " * 7
                versus_peer = f"{ips / peer[0]:11.2f}" if peer and mine else " " * 11
                flag = f"  {errors} errors" if errors else ""
                figures = f"{ips:9,.0f} {p50:8.3f} {p99:8.3f} {ips / raw:7.3f} {versus_echo} {versus_peer}{flag}"
                print(f"{system:14} {protocol:12} {clients:7} {figures}")
    plotted = plot(rows, systems, args, args.csv.with_suffix(".png"))
    print(f"\nevery run: {args.csv}; plot: {plotted}")


def plot(rows: list[dict[str, object]], systems: tuple[str, ...], args: argparse.Namespace, path: Path) -> Path:
    """Median inf/s and p99 against clients, a line per system and protocol."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: `make bench` installs it (the project's 'bench' extra)") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (rate, tail) = pyplot.subplots(1, 2, figsize=(12, 5))
    for system in systems:
        for protocol in args.protocols:
            points = [(c, m) for c in args.clients if (m := _median(rows, system, protocol, c)) is not None]
            if not points:
                continue
            clients = [c for c, _ in points]
            label = f"{system} {protocol}"
            rate.plot(clients, [m[0] for _, m in points], marker="o", label=label)
            tail.plot(clients, [m[2] for _, m in points], marker="o", label=label)
    rate.set(title=f"{args.model}: throughput (median of {args.runs} runs)", xlabel="clients", ylabel="inf/s")
    tail.set(title="p99 latency", xlabel="clients", ylabel="ms", yscale="log")
    rate.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def _median(
    rows: list[dict[str, object]], system: str, protocol: str, clients: int
) -> tuple[float, float, float, int] | None:
    points = [r for r in rows if r["system"] == system and r["protocol"] == protocol and r["clients"] == clients]
    if not points:
        return None
    return (
        statistics.median(float(p["inf_per_s"]) for p in points),  # type: ignore[arg-type]
        statistics.median(float(p["p50_ms"]) for p in points),  # type: ignore[arg-type]
        statistics.median(float(p["p99_ms"]) for p in points),  # type: ignore[arg-type]
        sum(int(p["errors"]) for p in points),  # type: ignore[call-overload]
    )


if __name__ == "__main__":
    main()

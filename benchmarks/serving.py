"""Serving throughput and latency of modelserve against raw in-process inference, bare echo servers
and Seldon MLServer, in one run, and the speed targets of docs/PERFORMANCE.md judged from it.

    make bench     (the same as:)
    .venv/bin/python -m benchmarks.serving [--runs 3] [--duration 5] [--clients 1 8 32] [--workers 1]
                                           [--no-echo] [--no-mlserver] [--no-targets] [--model mlp]

Builds the models if needed, measures raw onnxruntime in this process (one thread calling
session.run back to back: the ceiling no server reaches), then starts `modelserve serve` with its
default settings (the access log on, written to a file, as a user runs it) and loads it with
`modelserve bench`'s closed-loop clients over HTTP JSON, HTTP binary and gRPC at each concurrency;
then bare echo servers on the same stacks (benchmarks/echo.py: the floor, what the HTTP and gRPC
layers cost with no work behind them: uvicorn, grpc.aio and grpc's thread pool), answering what
modelserve answered; then MLServer (its own venv, default settings, the same ONNX file; HTTP JSON and
gRPC, as it has no binary extension) with the same requests. Unless --no-targets, each run also
measures what the targets compare: the access log off, a 5 ms batching delay (adaptive, and waited
out), ResNet-18 over JSON and binary at 8 clients; and once, the startup of `make run`'s repository.
Client and server share the machine's cores, as in the peers' figures. Prints the median of the
runs for each point with its ratios, then the targets with pass or fail, and writes every run to a
CSV file and the medians to a PNG plot beside it.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import uvloop

from benchmarks.echo import GRPC_KINDS, echo_server
from benchmarks.models import EXAMPLES, build_examples, repository_for
from benchmarks.peers import mlserver
from benchmarks.startup import free_port, one_run, wait_ready
from benchmarks.targets import (
    DELAY,
    ECHO,
    ECHOES,
    FIXED_DELAY,
    LOG_OFF,
    MLSERVER,
    OURS,
    Medians,
    Row,
    echo_system,
    print_verdicts,
    verdicts,
)
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
    options: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`modelserve serve` with ``options`` after the defaults and ``env`` added to this process's
    environment, once ready: the process, its URL and its gRPC address. With a ``log`` it logs there at
    the level its settings say (the default writes an access line per request); without one its output
    is discarded at log level warning."""
    port, grpc_port = free_port(), free_port()
    command = [
        *(sys.executable, "-m", "modelserve", "serve", "--model-repository", str(repository)),
        *("--http-port", str(port), "--grpc-port", str(grpc_port), "--workers", str(workers)),
        *(("--log-level", "warning") if log is None else ()),
        *options,
    ]
    output = subprocess.DEVNULL if log is None else log
    process = subprocess.Popen(command, stdout=output, stderr=output, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{url}/v2/health/ready", 120, "modelserve")
    except SystemExit:
        process.kill()
        raise
    return process, url, f"127.0.0.1:{grpc_port}"


@contextmanager
def served(
    repository: Path, args: argparse.Namespace, log: Path, options: Sequence[str] = ()
) -> Iterator[tuple[str, str]]:
    """``start_server`` with the benchmark's options, logging to the file ``log``, stopped when the block ends."""
    with log.open("ab") as output:
        process, url, grpc_address = start_server(repository, args.workers, [*args.serve_option, *options], log=output)
        try:
            yield url, grpc_address
        finally:
            process.terminate()
            process.wait(timeout=30)


def delayed(repository: Path, model: str, folder: Path, delay_ms: float, queue_delay: str) -> Path:
    """A repository holding ``model``'s file with ``max_queue_delay_ms`` set, as deployments set it, and
    waited as ``queue_delay`` says (adaptive or fixed)."""
    version = folder / model / "1"
    version.mkdir(parents=True, exist_ok=True)
    source = repository / model / "1" / "model.onnx"
    if not (version / "model.onnx").exists():
        (version / "model.onnx").symlink_to(source)
    batching = f"dynamic_batching:\n  max_queue_delay_ms: {delay_ms:g}\n  queue_delay: {queue_delay}\n"
    (folder / model / "config.yaml").write_text(batching)
    return folder


def measure(
    system: str,
    run: int,
    workload: Workload,
    url: str,
    grpc_address: str,
    protocols: Sequence[str],
    clients: Sequence[int],
    args: argparse.Namespace,
) -> list[Row]:
    """One server at every protocol and concurrency: a row per point."""
    rows: list[Row] = []
    for protocol in protocols:
        for count in clients:
            target = workload.target(protocol, url, grpc_address)
            result = uvloop.run(run_load(target, count, args.duration, warmup_s=args.warmup))
            rows.append(
                {
                    "run": run,
                    "model": workload.model,
                    "system": system,
                    "protocol": protocol,
                    "clients": count,
                    "inf_per_s": result.inferences_per_second,
                    "p50_ms": result.percentile_ms(50),
                    "p99_ms": result.percentile_ms(99),
                    "errors": result.errors,
                }
            )
            print(
                f"run {run}: {workload.model:8} {system:26} {protocol:11} {count:3} clients "
                f"{result.inferences_per_second:9.1f} inf/s"
            )
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


def measure_echo(run: int, workload: Workload, url: str, grpc_address: str, args: argparse.Namespace) -> list[Row]:
    """The echo floors at every protocol and concurrency, replaying modelserve's answers: uvicorn for
    HTTP; for gRPC grpc.aio and the thread-pool server with 8, 2 and 4 threads, the best of which is
    the floor."""
    rows: list[Row] = []
    for protocol in args.protocols:
        response = answer_of(workload.target(protocol, url, grpc_address))
        kinds = {echo_system(kind): kind for kind in GRPC_KINDS} if protocol == "grpc" else {ECHO: "http"}
        for system, kind in kinds.items():
            with echo_server(kind, response) as address:
                rows += measure(system, run, workload, address, address, [protocol], args.clients, args)
    return rows


def measure_targets(run: int, workload: Workload, repository: Path, work: Path, args: argparse.Namespace) -> list[Row]:
    """What the targets compare beyond the main table: the access log off, a 5 ms batching delay
    adaptive and waited out, and ResNet-18 over JSON and binary."""
    rows: list[Row] = []
    log = work / f"run-{run}.log"
    with served(repository, args, log, ["--access-log-sample-rate", "0"]) as (url, grpc_address):
        rows += measure(LOG_OFF, run, workload, url, grpc_address, ["http-binary", "grpc"], [1, 32], args)
    for system, queue_delay in ((DELAY, "adaptive"), (FIXED_DELAY, "fixed")):
        held = delayed(repository, workload.model, work / queue_delay, 5, queue_delay)
        with served(held, args, log) as (url, grpc_address):
            rows += measure(system, run, workload, url, grpc_address, ["http-binary"], [1, 32], args)
    resnet = repository_for("resnet18")
    with served(resnet, args, log) as (url, grpc_address):
        images = Workload.from_server(url, "resnet18")
        rows += measure(OURS, run, images, url, grpc_address, ["http-json", "http-binary"], [8], args)
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
    parser.add_argument("--no-targets", action="store_true", help="skip what only the targets compare")
    parser.add_argument("--startup-runs", type=int, default=3, help="starts of `make run`'s repository (0: none)")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "serving.csv")
    args = parser.parse_args()

    build_examples()
    repository = repository_for(args.model)
    model_file = repository / args.model / "1" / "model.onnx"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-") as scratch:
        work = Path(scratch)
        for run in range(1, args.runs + 1):
            with served(repository, args, work / f"run-{run}.log") as (url, grpc_address):
                workload = Workload.from_server(url, args.model)
                for batch in args.raw_batches:
                    raw_ips, raw_p50 = raw_inference(model_file, workload.inputs, args.duration, batch)
                    rows.append({"run": run, "model": args.model, "system": f"raw onnxruntime b{batch}",
                                 "protocol": "in-process", "clients": 1, "inf_per_s": raw_ips, "p50_ms": raw_p50,
                                 "p99_ms": float("nan"), "errors": 0})  # fmt: skip
                rows += measure(OURS, run, workload, url, grpc_address, args.protocols, args.clients, args)
                if not args.no_echo:
                    rows += measure_echo(run, workload, url, grpc_address, args)
            if not args.no_targets:
                rows += measure_targets(run, workload, repository, work, args)
            if not args.no_mlserver:  # MLServer has no binary extension: JSON and gRPC only
                peer_protocols = [p for p in args.protocols if p != "http-binary"]
                with (
                    tempfile.TemporaryDirectory() as workdir,
                    mlserver(args.model, model_file, Path(workdir)) as (url, grpc_address),
                ):
                    rows += measure(MLSERVER, run, workload, url, grpc_address, peer_protocols, args.clients, args)
    starts = [one_run(EXAMPLES, ["*"], settle=2.0) for _ in range(args.startup_runs)]

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_table(rows, args)
    if starts:
        ready = statistics.median(s.ready_s for s in starts)
        rss = statistics.median(s.rss_mib for s in starts)
        print(f"\n`make run`'s repository, medians of {len(starts)} starts: ready in {ready:.2f} s,", end=" ")
        print(f"idle RSS {rss:.0f} MiB")
    print_verdicts(verdicts(rows, args.model))
    plotted = plot(rows, (OURS, *ECHOES, MLSERVER), args, args.csv.with_suffix(".png"))
    print(f"\nevery run: {args.csv}; plot: {plotted}")


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    """Medians of the main table, with their ratios to raw inference, to the echo floor and to MLServer."""
    m = Medians(rows)
    raws = {b: m.point(args.model, f"raw onnxruntime b{b}", "in-process", 1) or 0.0 for b in args.raw_batches}
    raw = max(raws.values())
    described = ", ".join(f"{ips:,.1f} inf/s at batch {batch}" for batch, ips in raws.items())
    print(f"\nmodel {args.model}, medians of {args.runs} runs; raw onnxruntime in-process: {described}")
    print("'vs raw' compares with the best raw figure; 'vs echo' is the share of the bare stack's rate reached")
    columns = ("inf/s", 9), ("p50 ms", 8), ("p99 ms", 8), ("vs raw", 7), ("vs echo", 7), ("vs MLServer", 11)
    print(f"{'system':26} {'protocol':12} {'clients':>7} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for protocol in args.protocols:
        for clients in args.clients:
            peer = m.point(args.model, MLSERVER, protocol, clients)
            floor = m.floor(args.model, protocol, clients)
            for system in (OURS, *ECHOES, MLSERVER):
                ips = m.point(args.model, system, protocol, clients)
                if ips is None:
                    continue
                p50 = m.point(args.model, system, protocol, clients, "p50_ms") or 0.0
                p99 = m.point(args.model, system, protocol, clients, "p99_ms") or 0.0
                errors = m.errors(args.model, system, protocol, clients)
                mine = system == OURS
                versus_echo = f"{ips / floor:7.3f}" if floor and mine else " " * 7
                versus_peer = f"{ips / peer:11.2f}" if peer and mine else " " * 11
                flag = f"  {errors} errors" if errors else ""
                figures = f"{ips:9,.0f} {p50:8.3f} {p99:8.3f} {ips / raw:7.3f} {versus_echo} {versus_peer}{flag}"
                print(f"{system:26} {protocol:12} {clients:7} {figures}")


def plot(rows: list[Row], systems: tuple[str, ...], args: argparse.Namespace, path: Path) -> Path:
    """Median inf/s and p99 against clients, a line per system and protocol."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: `make bench` installs it (the project's 'bench' extra)") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    m = Medians(rows)
    figure, (rate, tail) = pyplot.subplots(1, 2, figsize=(12, 5))
    for system in systems:
        for protocol in args.protocols:
            points = [
                (c, ips, m.point(args.model, system, protocol, c, "p99_ms"))
                for c in args.clients
                if (ips := m.point(args.model, system, protocol, c)) is not None
            ]
            if not points:
                continue
            clients = [c for c, _, _ in points]
            label = f"{system} {protocol}"
            rate.plot(clients, [ips for _, ips, _ in points], marker="o", label=label)
            tail.plot(clients, [p99 for _, _, p99 in points], marker="o", label=label)
    rate.set(title=f"{args.model}: throughput (median of {args.runs} runs)", xlabel="clients", ylabel="inf/s")
    tail.set(title="p99 latency", xlabel="clients", ylabel="ms", yscale="log")
    rate.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


if __name__ == "__main__":
    main()

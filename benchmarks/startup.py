"""The cold path of `make run`: startup time to ready, idle memory, and what each import costs of them.

    .venv/bin/python -m benchmarks.startup [--runs 5] [--repository examples/model_repository]
                                           [--load-model NAME ...] [--import-runs 5] [--no-imports]

Each run starts a fresh `modelserve serve` as `make run` does (explicit mode, `--load-model '*'` unless
models are named), polls /v2/health/ready until it answers 200 (time to ready, and the CPU time the
process spent getting there), waits for the server to settle, then sums the resident memory of the
process and its children (idle RSS).

Then each module a runtime or the server imports is imported alone in a fresh interpreter that has
already imported numpy (every server has): wall time, CPU time and resident memory added by the import.
Dependencies shared by several modules count in each, so the rows overlap and do not add up; the share
column sets each against the medians of the runs above. Medians throughout: this machine is shared and
noisy, and CPU time is the steadier of the two clocks when other work competes for the cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent

# What a runtime imports when its first model loads, then what the server imports whatever it serves.
# scikit-learn: unpickling the example's iris pipeline imports these estimators' modules.
RUNTIME_IMPORTS = {
    "onnxruntime": "onnxruntime",
    "torch": "torch",
    "joblib": "joblib",
    "scikit-learn (iris pipeline)": "sklearn.linear_model,sklearn.pipeline,sklearn.preprocessing",
    "tensorrt": "tensorrt",
}
SERVER_IMPORTS = {
    "modelserve.cli (before arguments are read)": "modelserve.cli",
    "modelserve.server.app (the whole server)": "modelserve.server.app",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "grpc": "grpc",
    "tritonclient gRPC stubs": "tritonclient.grpc.service_pb2_grpc,tritonclient.grpc.model_config_pb2",
    "tritonclient.http": "tritonclient.http",
    "opentelemetry SDK": "opentelemetry.sdk.trace",
    "structlog": "structlog",
    "prometheus_client": "prometheus_client",
    "sqlalchemy": "sqlalchemy",
    "alembic": "alembic",
    "pydantic_settings": "pydantic_settings",
    "PyJWT (cryptography)": "jwt",
}

# Runs in a fresh interpreter: the modules named in argv[1] (comma-separated), timed and weighed.
_PROBE = """
import json, os, sys, time
import numpy  # every server imports it first; a module's cost is what it adds on top
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * page
rss0, wall0, cpu0 = rss(), time.perf_counter(), time.process_time()
for name in sys.argv[1].split(","):
    __import__(name)
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
print(json.dumps({"wall": wall, "cpu": cpu, "rss": rss() - rss0}))
"""


@dataclass(frozen=True)
class Run:
    """One server start."""

    ready_s: float
    cpu_s: float
    rss_mib: float
    models: int


@dataclass(frozen=True)
class ImportCost:
    """Medians of importing one module alone."""

    wall_s: float
    cpu_s: float
    rss_mib: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], probe: str, timeout: float, what: str) -> None:
    """Poll ``probe`` until it answers 200; stop with ``what`` named if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready within {timeout:g} s")
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.01)


def one_run(repository: Path, load_models: list[str], settle: float) -> Run:
    """Start a server as `make run` does, and read its time to ready and its idle RSS."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "modelserve", "serve", "--model-repository", str(repository)),
            *("--http-port", str(port), "--grpc-port", str(free_port())),
            *("--model-control-mode", "explicit", *(arg for name in load_models for arg in ("--load-model", name))),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, f"{url}/v2/health/ready", 120, "modelserve")
        ready = time.perf_counter() - started
        times = psutil.Process(process.pid).cpu_times()
        models = len(httpx.post(f"{url}/v2/repository/index", json={"ready": True}).json())
        time.sleep(settle)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        rss = sum(p.memory_info().rss for p in tree) / 2**20
        return Run(ready, times.user + times.system, rss, models)
    finally:
        process.terminate()
        process.wait(timeout=30)


def import_cost(modules: str, runs: int) -> ImportCost | None:
    """Median cost of importing ``modules`` in fresh interpreters, or None where one is not installed."""
    if any(importlib.util.find_spec(name.split(".")[0]) is None for name in modules.split(",")):
        return None
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _PROBE, modules], capture_output=True, text=True, check=True)
        samples.append(json.loads(out.stdout))
    return ImportCost(
        statistics.median(s["wall"] for s in samples),
        statistics.median(s["cpu"] for s in samples),
        statistics.median(s["rss"] for s in samples) / 2**20,
    )


def print_imports(title: str, imports: dict[str, str], runs: int, ready: Run) -> None:
    print(f"\n{title}: wall ms, CPU ms, RSS MiB (share of the startup's wall time, CPU time and idle RSS)")
    for label, modules in imports.items():
        cost = import_cost(modules, runs)
        if cost is None:
            print(f"  {label:46s} not installed")
            continue
        shares = (cost.wall_s / ready.ready_s, cost.cpu_s / ready.cpu_s, cost.rss_mib / ready.rss_mib)
        print(
            f"  {label:46s} {cost.wall_s * 1000:6.0f} {cost.cpu_s * 1000:6.0f} {cost.rss_mib:6.1f}"
            f"   ({shares[0]:4.0%} {shares[1]:4.0%} {shares[2]:4.0%})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repository", type=Path, default=ROOT / "examples" / "model_repository")
    parser.add_argument(
        "--load-model", action="append", dest="load_models", help="models to load (repeatable; default: *)"
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading RSS")
    parser.add_argument("--import-runs", type=int, default=5, help="fresh interpreters per module imported")
    parser.add_argument("--no-imports", action="store_true", help="measure startup only")
    args = parser.parse_args()
    results = [one_run(args.repository, args.load_models or ["*"], args.settle) for _ in range(args.runs)]
    for i, run in enumerate(results, 1):
        print(
            f"run {i}: ready in {run.ready_s:.2f} s ({run.cpu_s:.2f} s CPU), idle RSS {run.rss_mib:.0f} MiB, "
            f"{run.models} model versions"
        )
    median = Run(
        statistics.median(r.ready_s for r in results),
        statistics.median(r.cpu_s for r in results),
        statistics.median(r.rss_mib for r in results),
        results[0].models,
    )
    spread = f"{min(r.ready_s for r in results):.2f} to {max(r.ready_s for r in results):.2f} s"
    print(
        f"median of {len(results)}: startup to ready {median.ready_s:.2f} s ({spread}), "
        f"{median.cpu_s:.2f} s CPU, idle RSS {median.rss_mib:.0f} MiB"
    )
    if args.no_imports:
        return
    print_imports("Runtimes, each imported when its first model loads", RUNTIME_IMPORTS, args.import_runs, median)
    print_imports("The server's own imports", SERVER_IMPORTS, args.import_runs, median)


if __name__ == "__main__":
    main()

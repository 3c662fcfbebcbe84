"""Startup time to ready and idle memory of `modelserve serve` on the example repository.

    .venv/bin/python -m benchmarks.startup [--runs 5] [--repository examples/model_repository]

Each run starts a fresh process, polls /v2/health/ready until it answers 200 (time to ready), waits
for the server to settle, then sums the resident memory of the process and its children (idle RSS).
The medians of the runs are printed; this machine is noisy, so single runs mean little.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


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


def one_run(repository: Path, settle: float) -> tuple[float, float, int]:
    """Seconds to ready, idle RSS in MiB, and the number of model versions serving."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "modelserve", "serve", "--model-repository", str(repository)),
            *("--http-port", str(port), "--grpc-port", str(free_port())),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, f"{url}/v2/health/ready", 120, "modelserve")
        ready = time.perf_counter() - started
        models = len(httpx.post(f"{url}/v2/repository/index", json={"ready": True}).json())
        time.sleep(settle)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        rss = sum(p.memory_info().rss for p in tree) / 2**20
        return ready, rss, models
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repository", type=Path, default=ROOT / "examples" / "model_repository")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading RSS")
    args = parser.parse_args()
    results = [one_run(args.repository, args.settle) for _ in range(args.runs)]
    for i, (ready, rss, models) in enumerate(results, 1):
        print(f"run {i}: ready in {ready:.2f} s, idle RSS {rss:.0f} MiB, {models} model versions")
    print(
        f"median of {len(results)}: startup to ready {statistics.median(r[0] for r in results):.2f} s, "
        f"idle RSS {statistics.median(r[1] for r in results):.0f} MiB"
    )


if __name__ == "__main__":
    main()

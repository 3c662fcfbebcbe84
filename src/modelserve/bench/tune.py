"""``modelserve tune``: what Triton users run Model Analyzer for. Sweeps a model's max batch size, batching
delay, instance count and runtime threads under load, and finds the fastest configuration whose p99
latency stays within a budget.

Each candidate is the model's own config.yaml with those four fields set, served alone from a
temporary repository by a fresh ``modelserve serve`` (so no candidate inherits another's warm state
or threads), loaded by the built-in closed-loop load generator. Candidates run in the order of the
grid until it is done or ``max_minutes`` is spent. The frontier is the set of candidates no other
beats on both throughput and p99.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml

from modelserve.bench.loadgen import run_load
from modelserve.bench.workload import Workload

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configuration to measure; None leaves the model's own setting."""

    max_batch_size: int
    queue_delay_ms: float
    instance_count: int
    threads: int | None

    def config(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (a config.yaml's mapping) with this candidate's settings."""
        config = dict(base)
        config["max_batch_size"] = self.max_batch_size
        batching = dict(config.get("dynamic_batching") or {})
        batching["max_queue_delay_ms"] = self.queue_delay_ms
        config["dynamic_batching"] = batching if self.max_batch_size > 0 else None
        if config["dynamic_batching"] is None:
            del config["dynamic_batching"]
        config["instance_count"] = self.instance_count
        if self.threads is not None:
            config["parameters"] = {**(config.get("parameters") or {}), "intra_op_num_threads": self.threads}
        return config

    def describe(self) -> str:
        threads = "default" if self.threads is None else str(self.threads)
        return (
            f"max_batch_size {self.max_batch_size}, delay {self.queue_delay_ms:g} ms, "
            f"{self.instance_count} instance(s), threads {threads}"
        )


@dataclass(frozen=True, slots=True)
class Point:
    """What one candidate measured."""

    candidate: Candidate
    inferences_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def grid(
    batch_sizes: Sequence[int], delays_ms: Sequence[float], instances: Sequence[int], threads: Sequence[int | None]
) -> list[Candidate]:
    """Every combination, those likeliest to matter first: batch size varies slowest."""
    return [Candidate(*values) for values in itertools.product(batch_sizes, delays_ms, instances, threads)]


def frontier(points: Sequence[Point]) -> list[Point]:
    """The points no other beats on both throughput and p99, fastest first."""
    kept = [
        p
        for p in points
        if not any(
            o.inferences_per_second >= p.inferences_per_second
            and o.p99_ms <= p.p99_ms
            and (o.inferences_per_second, o.p99_ms) != (p.inferences_per_second, p.p99_ms)
            for o in points
        )
    ]
    return sorted(kept, key=lambda p: -p.inferences_per_second)


def best(points: Sequence[Point], budget_ms: float) -> Point | None:
    """The fastest point without errors whose p99 is within ``budget_ms``."""
    fitting = [p for p in points if p.p99_ms <= budget_ms and not p.errors]
    return max(fitting, key=lambda p: p.inferences_per_second, default=None)


def tune(
    repository: Path,
    model: str,
    candidates: Sequence[Candidate],
    *,
    clients: int,
    protocol: str,
    duration_s: float,
    warmup_s: float,
    max_minutes: float,
    progress: Callable[[Candidate], None] = lambda _: None,
) -> list[Point]:
    """Measure each candidate in turn, within ``max_minutes``; what was measured."""
    folder = repository / model
    base = _read_config(folder / "config.yaml")
    stop_at = time.monotonic() + max_minutes * 60
    points = []
    for candidate in candidates:
        if time.monotonic() >= stop_at:
            break
        progress(candidate)
        with tempfile.TemporaryDirectory(prefix="modelserve-tune-") as scratch:
            trial = Path(scratch) / model
            shutil.copytree(folder, trial, symlinks=True, ignore=shutil.ignore_patterns("config.yaml"))
            (trial / "config.yaml").write_text(yaml.safe_dump(candidate.config(base), sort_keys=False))
            with _server(Path(scratch), Path(scratch) / "server.log") as (url, grpc_address):
                workload = Workload.from_server(url, model)
                target = workload.target(protocol, url, grpc_address)
                result = uvloop.run(run_load(target, clients, duration_s, warmup_s=warmup_s))
        points.append(
            Point(
                candidate,
                result.inferences_per_second,
                result.percentile_ms(50),
                result.percentile_ms(99),
                result.errors,
            )
        )
    return points


def write_config(repository: Path, model: str, candidate: Candidate) -> Path:
    """Write ``candidate`` into the model's config.yaml, the old one kept beside it as config.yaml.bak."""
    path = repository / model / "config.yaml"
    base = _read_config(path)
    if path.exists():
        shutil.copy2(path, path.with_suffix(".yaml.bak"))
    path.write_text(yaml.safe_dump(candidate.config(base), sort_keys=False))
    return path


def plot(points: Sequence[Point], chosen: Point | None, budget_ms: float, path: Path) -> Path:
    """Throughput against p99 for every candidate, the frontier joined, the budget and the choice marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    axes.scatter([p.p99_ms for p in points], [p.inferences_per_second for p in points], label="candidates")
    edge = sorted(frontier(points), key=lambda p: p.p99_ms)
    axes.plot([p.p99_ms for p in edge], [p.inferences_per_second for p in edge], label="frontier")
    axes.axvline(budget_ms, linestyle="--", label=f"budget {budget_ms:g} ms")
    if chosen is not None:
        axes.scatter([chosen.p99_ms], [chosen.inferences_per_second], marker="*", s=250, label="chosen")
    axes.set_xlabel("p99 latency (ms)")
    axes.set_ylabel("inferences/s")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of fields")
    return loaded


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _server(repository: Path, log: Path) -> Iterator[tuple[str, str]]:
    """A ``modelserve serve`` of ``repository`` on free ports, once ready: its URL and gRPC address."""
    port, grpc_port = _free_port(), _free_port()
    command = [
        *(sys.executable, "-m", "modelserve", "serve", "--model-repository", str(repository)),
        *("--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", str(grpc_port)),
        *("--log-level", "warning", "--model-cache-dir", str(repository / ".cache")),
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, env=os.environ.copy())
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not _ready(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the candidate's server did not turn ready:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield url, f"127.0.0.1:{grpc_port}"
        finally:
            process.terminate()
            process.wait(timeout=60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

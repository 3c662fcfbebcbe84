"""Starting a real `modelserve serve` process on a free loopback port, for the e2e tier."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from modelserve.observability.logging import ACCESS_LOGGER, FLUSH_INTERVAL_S

MODELSERVE = [sys.executable, "-m", "modelserve"]
MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def make_run_options() -> list[str]:
    """The options `make run` serves with, as the Makefile spells them."""
    line = next(line for line in MAKEFILE.read_text().splitlines() if line.startswith("RUN_OPTIONS :="))
    return shlex.split(line.split(":=", 1)[1])


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A server process and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        """Base URL, as httpx wants it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """host:port, as tritonclient wants it."""
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        """host:port of the gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` on /metrics whose labels include ``labels``."""
        text = httpx.get(f"{self.url}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def access_lines(self, at_least: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The server's JSON access lines, once it has written ``at_least`` of them (or ``timeout_s`` has
        passed): a thread writes them, up to ``FLUSH_INTERVAL_S`` after their answers left."""
        deadline = time.monotonic() + timeout_s
        while True:
            output = self.output()
            whole = output[: output.rfind("\n") + 1]  # not a line the server is writing now
            lines = [orjson.loads(line) for line in whole.splitlines() if line.startswith("{")]
            access = [line for line in lines if line.get("logger") == ACCESS_LOGGER]
            if len(access) >= at_least or time.monotonic() > deadline:
                return access
            time.sleep(FLUSH_INTERVAL_S)


@contextmanager
def serve(
    repository: Path | str | None,
    log: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> Iterator[RunningServer]:
    """Run `modelserve serve` until the block ends; fail with the server's output if it never gets ready.
    ``repository`` None passes no --model-repository (the environment says where models are).

    Its MODEL_CACHE_DIR, and with it the traffic history's SQLite file, is beside ``log`` unless ``env``
    says otherwise: a server that learns from its history must not learn from other tests' traffic.
    SHUTDOWN_GRACE_SEC is 1 s unless ``env`` or ``args`` set it: a drain keeps listening for up to 5 s
    after SIGTERM even when idle, and dozens of servers stop in a run."""
    port, grpc_port = free_port(), free_port()
    command = [
        *MODELSERVE,
        "serve",
        *(("--model-repository", str(repository)) if repository is not None else ()),
        "--http-port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        *args,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MODEL_CACHE_DIR": str(log.parent / "cache"), "SHUTDOWN_GRACE_SEC": "1", **(env or {})},
            start_new_session=True,
        )
    server = RunningServer(process, port, grpc_port, log)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop(process, 30)


def stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM to a process started in its own session, then SIGKILL if it outlives ``timeout_s``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_ready(server: RunningServer, timeout: float) -> None:
    """Poll /v2/health/ready until 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server not ready within {timeout} s:\n{server.output()}")

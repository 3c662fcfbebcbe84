"""Regions behind a real HAProxy for the failover tests and benchmark: a modelserve server per region on
its own moto store, the regions file naming them, HAProxy started from `router-config`'s output, and a
bounded closed-loop load through it that records every request's outcome and timing."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml

from modelserve.regions.config import load_regions
from modelserve.regions.router import SERVED_BY_HEADER, RouterSettings, render
from modelserve.regions.router_cli import haproxy_env
from modelserve.regions.runtime import RuntimeAPI
from tests.e2e.server import RunningServer, free_port, serve, stop
from tests.regions.conftest import Endpoint
from tests.s3 import CREDENTIALS

ROOT = Path(__file__).resolve().parents[2]
BODY = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]})


def haproxy() -> str:
    """The haproxy binary: .tools (unpacked by `make tools`), then PATH; fails saying how to get it."""
    unpacked = ROOT / ".tools" / "root" / "usr" / "sbin" / "haproxy"
    found = str(unpacked) if unpacked.exists() else shutil.which("haproxy")
    if found is None:
        raise AssertionError("haproxy is missing: `make test` (or `make tools`) unpacks Debian's package into .tools")
    return found


@dataclass
class Router:
    """A running HAProxy: where to send requests, its runtime API, and its log."""

    process: subprocess.Popen[bytes]
    port: int
    api: RuntimeAPI
    socket: Path
    log: Path
    grpc_port: int = 0
    metrics_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_router(regions_file: Path, folder: Path, settings: RouterSettings) -> Iterator[Router]:
    """HAProxy on the configuration `router-config` writes for ``regions_file``, until the block ends."""
    config = folder / "haproxy.cfg"
    config.write_text(render(load_regions(regions_file), settings))
    binary = haproxy()
    log = folder / "haproxy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=sink, stderr=subprocess.STDOUT, env=haproxy_env(binary)
        )
    api = RuntimeAPI(settings.runtime_socket)
    router = Router(
        process, settings.http_port, api, settings.runtime_socket, log, settings.grpc_port, settings.metrics_port
    )
    try:
        deadline = time.monotonic() + 10
        while not router.socket.exists() or not _all_up(router):
            assert process.poll() is None, f"haproxy exited: {router.output()}"
            assert time.monotonic() < deadline, f"haproxy's servers not up in 10 s: {router.output()}"
            time.sleep(0.02)
        yield router
    finally:
        process.terminate()
        process.wait(10)


def _all_up(router: Router) -> bool:
    try:
        return all(row.status == "UP" for row in router.api.stats() if not row.backup)
    except OSError:
        return False


def router_settings(**overrides: object) -> RouterSettings:
    """Quick checks and short timeouts (a short socket path: Unix sockets allow 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="hap-"))
    values: dict[str, object] = {
        "runtime_socket": folder / "api.sock",
        "bind_host": "127.0.0.1",
        "http_port": free_port(),
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "server_timeout_s": 1.0,
        "check_interval_ms": 100,
        "check_timeout_ms": 300,
        **overrides,
    }
    return RouterSettings(**values)  # type: ignore[arg-type]


def write_regions(path: Path, stores: dict[str, Endpoint], servers: dict[str, RunningServer]) -> Path:
    """A regions file whose regions are the ones in ``servers``, by their order, each serving on its server."""
    document = {
        "regions": [
            {
                "name": name,
                "priority": index + 1,
                "store": {
                    "endpoint_url": stores[name].moto_url,
                    "bucket": stores[name].bucket,
                    "prefix": "models",
                    "credentials": {
                        "access_key_id_env": "REGION_ACCESS_KEY",
                        "secret_access_key_env": "REGION_SECRET_KEY",
                    },
                },
                "endpoints": [server.url, f"grpc://{server.grpc_address}"],
            }
            for index, (name, server) in enumerate(servers.items())
        ],
        "replication": {"request_attempts": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.05},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@contextmanager
def regional_servers(
    stores: dict[str, Endpoint], folder: Path, models: str = "scale"
) -> Iterator[dict[str, RunningServer]]:
    """A `modelserve serve` per region on its store, loading ``models``, in the order of ``stores``."""
    with ExitStack() as stack:
        found = {}
        for name, store in stores.items():
            env = {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": store.moto_url, "REGION": name}
            repository = f"s3://{store.bucket}/models"
            (folder / name).mkdir(exist_ok=True)
            args = ("--model-control-mode", "explicit", "--load-model", models)
            found[name] = stack.enter_context(serve(repository, folder / name / "server.log", *args, env=env))
        yield found


def kill(server: RunningServer) -> None:
    """End a server that may be stopped (SIGSTOP) for good, as its fixture would."""
    stop(server.process, 1)


@dataclass
class Record:
    """One request through the router: when it started (monotonic), how long it took, what answered."""

    started: float
    seconds: float
    status: int  # 0: the connection failed before an answer began
    served_by: str
    error: str = ""
    cut: bool = False  # the answer's head came, then the connection broke before its body

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.cut


@dataclass
class Traffic:
    """Closed-loop clients sending ``BODY`` through the router until ``max_requests`` or ``max_seconds``."""

    url: str
    clients: int = 4
    max_requests: int = 20_000
    max_seconds: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        if error is not None:  # the test failed: stop now rather than run the load out
            self.finish_after(0)
        self._thread.join(self.max_seconds + 10)

    def wait_for(self, count: int) -> None:
        """Block until ``count`` requests are answered (or the load has ended)."""
        with self._progress:
            done = self._progress.wait_for(
                lambda: len(self.records) >= count or not self._thread.is_alive(), self.max_seconds
            )
        assert done, f"only {len(self.records)} of {count} requests answered"

    def finish_after(self, more: int) -> None:
        """Stop once ``more`` requests beyond those answered now are answered."""
        self.max_requests = min(self.max_requests, len(self.records) + more)

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    async def _run(self) -> None:
        stop_at = time.monotonic() + self.max_seconds
        await asyncio.gather(*(self._client(stop_at) for _ in range(self.clients)))
        with self._progress:
            self._progress.notify_all()

    async def _client(self, stop_at: float) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        head = ["POST /v2/models/scale/infer HTTP/1.1", f"Host: {host}", f"Content-Length: {len(BODY)}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + BODY
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < stop_at and len(self.records) < self.max_requests:
            started = time.monotonic()
            status, served_by, error, cut = 0, "", "", False
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, int(port))
                reader, writer = connection
                writer.write(request)
                status, served_by, length = await _head(reader)
                cut = True
                await reader.readexactly(length)
                cut = False
            except (OSError, asyncio.IncompleteReadError) as exc:
                error = repr(exc)
                if connection is not None:
                    connection[1].close()
                connection = None
            record = Record(started, time.monotonic() - started, status, served_by, error, cut)
            with self._progress:
                self.records.append(record)
                self._progress.notify_all()
        if connection is not None:
            connection[1].close()


async def _head(reader: asyncio.StreamReader) -> tuple[int, str, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, length, served_by = int(head[9:12]), 0, ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == SERVED_BY_HEADER.lower().encode():
            served_by = value.strip().decode()
    return status, served_by, length

"""SIGTERM under load, to a real server process: readiness answers 503 at once and goes on answering,
accepted requests (HTTP and gRPC) finish with correct answers, new ones get 503 with Retry-After (gRPC
UNAVAILABLE), and the process exits 0 within SHUTDOWN_GRACE_SEC; with one process or two workers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelserve.server.lifecycle import LISTEN_AT_LEAST_S
from tests.builders import batched_copy_of_simple
from tests.e2e.server import RunningServer, serve

CLIENTS = 8
QUEUE_DELAY_MS = 300  # every request to `simple` waits this long for a batch: many are in flight at SIGTERM
HOLD_MS = 2000  # `held` keeps its lone gRPC request this long
GRACE_S = 10.0
PROBES = ("/health/ready", "/v2/health/ready")
# How long before the listener closes a probe may still meet it closing (the connection accepted and reset).
CLOSING_S = 0.5


@pytest.fixture
def repository(built_repository: Path, tmp_path: Path) -> Path:
    root = tmp_path / "model_repository"
    shutil.copytree(built_repository, root)
    batched_copy_of_simple(root, "held", f"  max_queue_delay_ms: {HOLD_MS}\n")
    return root


def test_sigterm_keeps_both_ports_answering_while_accepted_requests_finish_then_exits_0(
    repository: Path, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with (
        serve(repository, log, *_options("simple", "held")) as server,
        _load(server) as load,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        held = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(_grpc_request("held", 7))
        _wait_for(lambda: _in_flight(server, "held") == 1, "the gRPC request to be inside `held`")
        terminated = _terminate(server)
        with _probing(server) as probes:
            probes.first_503.wait(5)
            ready, refused = _grpc_after_sigterm(server)
            answer = held.result(timeout=30)
            code = server.process.wait(GRACE_S + 10)
        exited = time.monotonic()

    assert code == 0, server.output()[-3000:]
    assert exited - terminated < GRACE_S
    load.check(terminated)
    assert np.frombuffer(answer.raw_output_contents[0], np.int32).tolist() == [14] * 16, "the held request's answer"
    assert not ready, "gRPC ServerReady after SIGTERM"
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (refused.details() or "")
    probes.check(terminated, until=terminated + LISTEN_AT_LEAST_S)
    assert "drained in" in log.read_text()


def test_each_of_two_workers_drains_when_the_whole_process_group_gets_sigterm(repository: Path, tmp_path: Path) -> None:
    """Each worker gets SIGTERM twice, from the signal and from the supervisor passing it on; neither is
    taken as the second signal that would stop a worker at once."""
    log = tmp_path / "server.log"
    with serve(repository, log, *_options("simple"), "--workers", "2") as server:
        _wait_for(lambda: len(re.findall("ready: 1 model version", server.output())) == 2, "both workers to be ready")
        with _load(server) as load:
            terminated = _terminate(server)
            with _probing(server) as probes:
                code = server.process.wait(GRACE_S + 10)
            exited = time.monotonic()

    assert code == 0, server.output()[-3000:]
    assert exited - terminated < GRACE_S
    load.check(terminated)
    probes.check(terminated, until=terminated + LISTEN_AT_LEAST_S)
    assert log.read_text().count("drained in") == 2


def _options(*models: str) -> list[str]:
    options = ["--model-control-mode", "explicit", "--batch-timeout-ms", str(QUEUE_DELAY_MS)]
    options += ["--shutdown-grace-sec", str(GRACE_S)]
    for model in models:
        options += ["--load-model", model]
    return options


def _terminate(server: RunningServer) -> float:
    """SIGTERM to the server's whole process group, as a terminal's Ctrl+C reaches every process in it."""
    os.killpg(server.process.pid, signal.SIGTERM)
    return time.monotonic()


@dataclass
class Load:
    """HTTP clients sending `simple` requests until one is refused; each answer is judged."""

    outcomes: list[tuple[float, float, str]] = field(default_factory=list)  # (sent, answered, outcome)
    answered: set[int] = field(default_factory=set)  # the clients that have had a right answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, terminated: float) -> None:
        """Every request got its right answer or a 503; one in flight at SIGTERM finished after it."""
        kinds = Counter(outcome for _, _, outcome in self.outcomes)
        assert set(kinds) == {"ok", "503 shutting down"}, kinds
        assert kinds["503 shutting down"] == CLIENTS, kinds
        finished_after = [o for sent, done, o in self.outcomes if sent < terminated < done and o == "ok"]
        assert finished_after, f"no request accepted before SIGTERM finished after it: {kinds}"


@contextmanager
def _load(server: RunningServer) -> Iterator[Load]:
    """Clients under way, each answered at least once, until the block ends and they have stopped."""
    load = Load()
    url, deadline = f"{server.url}/v2/models/simple/infer", time.monotonic() + 60

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=20) as http:
            while time.monotonic() < deadline:
                a, b = rng.integers(-1000, 1000, (2, 16))
                inputs = [
                    {"name": name, "datatype": "INT32", "shape": [1, 16], "data": data.tolist()}
                    for name, data in (("INPUT0", a), ("INPUT1", b))
                ]
                sent = time.monotonic()
                try:
                    outcome = _judge(http.post(url, json={"inputs": inputs}), a, b)
                except httpx.TransportError as exc:
                    outcome = f"cut off or refused: {exc!r}"
                with load.lock:
                    load.outcomes.append((sent, time.monotonic(), outcome))
                    if outcome == "ok":
                        load.answered.add(seed)
                if outcome != "ok":
                    return

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: len(load.answered) == CLIENTS, "every client to have an answer")
        yield load
    finally:
        for thread in threads:
            thread.join(60)


def _judge(response: httpx.Response, a: np.ndarray, b: np.ndarray) -> str:
    if response.status_code == 503:
        assert "shutting down" in response.json()["error"], response.text
        assert response.headers["retry-after"] == "1"
        assert response.headers["connection"] == "close"
        return "503 shutting down"
    if response.status_code != 200:
        return f"unexpected {response.status_code}: {response.text}"
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    right = outputs["OUTPUT0"] == (a + b).tolist() and outputs["OUTPUT1"] == (a - b).tolist()
    return "ok" if right else f"wrong answer: {outputs}"


@dataclass
class Probes:
    """Readiness answers on both paths, from SIGTERM until the process exits: (sent, path, outcome)."""

    seen: list[tuple[float, str, str]] = field(default_factory=list)
    first_503: threading.Event = field(default_factory=threading.Event)

    def check(self, terminated: float, until: float) -> None:
        """503 on both paths within a second of SIGTERM, and nothing but 503 until ``until``."""
        for path in PROBES:
            answers = [(sent, outcome) for sent, p, outcome in self.seen if p == path]
            assert answers, f"{path} was never probed"
            first = next(sent for sent, outcome in answers if outcome == "503")
            assert first - terminated < 1.0, f"{path} answered 503 only {first - terminated:.2f} s after SIGTERM"
            early = Counter(outcome for sent, outcome in answers if sent < until - CLOSING_S)
            assert set(early) == {"503"}, f"{path} before the server may stop listening: {early}"


@contextmanager
def _probing(server: RunningServer) -> Iterator[Probes]:
    """Probe readiness, both paths in turn, every 50 ms until the process exits."""
    probes, stop = Probes(), threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=1) as http:
            for turn in range(2000):
                if stop.is_set() or server.process.poll() is not None:
                    return
                path, sent = PROBES[turn % 2], time.monotonic()
                try:
                    outcome = str(http.get(f"{server.url}{path}", headers={"Connection": "close"}).status_code)
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                probes.seen.append((sent, path, outcome))
                if outcome == "503":
                    probes.first_503.set()
                stop.wait(0.05)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        yield probes
    finally:
        stop.set()
        thread.join(10)


def _grpc_after_sigterm(server: RunningServer) -> tuple[bool, grpc.RpcError]:
    """ServerReady, and the refusal of a new ModelInfer, on a new connection: the gRPC port still accepts."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready = stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_grpc_request("simple", 1), timeout=5)
        return ready, refused.value


def _grpc_request(model: str, value: int) -> service_pb2.ModelInferRequest:
    """INPUT0 and INPUT1 all ``value``: OUTPUT0 is then twice ``value``."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.full(16, value, np.int32).tobytes())
    return request


def _in_flight(server: RunningServer, model: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    pattern = rf'^model_serving_requests_in_flight\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout_s:g} s waiting for {what}"
        time.sleep(0.02)

"""Progressive rollout on a real server: a version that fails and one three times slower are rolled back
by the server's own analysis, a healthy one is promoted, an operator pauses, resumes and aborts, and a
restarted server resumes where the database says (SQLite and PostgreSQL).

Each model's version 1 is ``deep_onnx`` (600 layers, a few milliseconds a request); the tests write
version 2 into the repository of the running server, as an operator publishes one, then roll it out.
Load loops are sequential clients, bounded in requests and time, that read the rollout's state every
few requests; the analyses themselves run on the server's clock.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner, Result

from modelserve.cli import app
from modelserve.db import open_engine
from modelserve.rollout.analysis import Thresholds
from modelserve.rollout.schema import Rollout
from modelserve.rollout.store import RolloutStore
from tests.builders import deep_onnx, failing_onnx, write_config
from tests.e2e.server import RunningServer, serve
from tests.postgres import PostgresServer
from tests.server.credentials import ADMIN_KEY, API_KEYS, INFER_KEY

LAYERS = 600
MODELS = ("broken", "slow", "healthy", "steered")
BODY = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.25] * 64}]}
CONFIG = "platform: onnx\nmax_batch_size: 8\n"


def _repository(root: Path, models: tuple[str, ...]) -> Path:
    repository = root / "model_repository"
    for name in models:
        write_config(repository / name, CONFIG)
        deep_onnx(repository / name / "1" / "model.onnx", layers=LAYERS)
    return repository


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repository(tmp_path_factory.mktemp("rollout"), MODELS)


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    with serve(
        repository, repository.parent / "server.log", "--model-control-mode", "explicit", "--load-model", "*"
    ) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as session:
        yield session


def publish(repository: Path, model: str, build: Callable[[Path], Path]) -> None:
    """Write version 2 of ``model`` into the repository, as an operator publishes a version."""
    build(repository / model / "2" / "model.onnx")


def start(client: httpx.Client, model: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"/v2/repository/models/{model}/rollout", json={"version": 2, **fields})
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    assert started["state"] == "progressing", started
    return started


def status(client: httpx.Client, model: str) -> dict[str, Any]:
    response = client.get(f"/v2/repository/models/{model}/rollout")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


@dataclass
class Load:
    """What a sequential client saw: each answer's status and version, and when the rollout ended."""

    answers: list[tuple[int, str]] = field(default_factory=list)
    ended_at: int | None = None  # index of the first request sent after the rollout was seen finished

    def failed(self) -> list[int]:
        return [i for i, (code, _) in enumerate(self.answers) if code != 200]


def drive(client: httpx.Client, model: str, *, until: tuple[str, ...], limit_s: float, after: int = 20) -> Load:
    """Send requests naming no version until the rollout is in a state of ``until`` (then ``after`` more),
    reading its state every 10 requests; at most 20,000 requests and ``limit_s`` seconds."""
    load = Load()
    deadline = time.monotonic() + limit_s
    while len(load.answers) < 20_000 and time.monotonic() < deadline:
        answer = client.post(f"/v2/models/{model}/infer", json=BODY)
        load.answers.append((answer.status_code, answer.json().get("model_version", "")))
        if load.ended_at is None and len(load.answers) % 10 == 0 and status(client, model)["state"] in until:
            load.ended_at = len(load.answers)
        if load.ended_at is not None and len(load.answers) >= load.ended_at + after:
            return load
    raise AssertionError(f"the rollout of {model} never reached {until}: {status(client, model)}")


def versions(client: httpx.Client, model: str) -> dict[str, str]:
    index = client.post("/v2/repository/index", json={}).json()
    return {entry["version"]: entry["state"] for entry in index if entry["name"] == model}


def test_a_version_that_fails_is_rolled_back_within_two_intervals(
    client: httpx.Client, server: RunningServer, repository: Path
) -> None:
    publish(repository, "broken", failing_onnx)
    started = start(client, "broken", steps=[10, 50, 100], interval_s=0.5, min_samples=5)
    assert started["weight"] == 10

    load = drive(client, "broken", until=("failed",), limit_s=20)

    rollout = status(client, "broken")
    assert rollout["weight"] == 0
    assert rollout["reason"].startswith("error rate 100.00%"), rollout
    assert rollout["finished_at"] - started["updated_at"] <= 2 * 0.5
    # Only the canary's share failed, and only before the rollback: 10 % of what was sent until then.
    assert load.ended_at is not None
    failed = load.failed()
    assert 0 < len(failed) <= math.ceil(0.10 * load.ended_at) + 1
    assert all(code == 200 and version == "1" for code, version in load.answers[load.ended_at :])
    assert versions(client, "broken") == {"1": "READY"}  # the version left is retired
    metrics = client.get("/metrics").text
    assert 'model_serving_rollout_rollbacks_total{cause="error_rate",model="broken"} 1.0' in metrics
    assert 'model_serving_rollout_weight{model="broken",state="failed",version="2"} 0.0' in metrics
    events = [line for line in server.output().splitlines() if '"rollout rolled back"' in line and '"broken"' in line]
    assert len(events) == 1, events
    assert '"cause":"error_rate"' in events[0]
    assert '"state":"failed"' in events[0]


def test_a_version_three_times_slower_is_rolled_back_on_its_latency(client: httpx.Client, repository: Path) -> None:
    publish(repository, "slow", lambda path: deep_onnx(path, layers=3 * LAYERS))
    started = start(client, "slow", steps=[50, 100], interval_s=0.5, min_samples=20, max_latency_ratio=1.5)

    load = drive(client, "slow", until=("failed",), limit_s=20)

    rollout = status(client, "slow")
    assert "latency" in rollout["reason"], rollout
    assert "above the maximum ratio 1.5" in rollout["reason"]
    assert [check["outcome"] for check in rollout["checks"] if check["outcome"] != "wait"] == ["breach"]
    assert rollout["checks"][-1]["median_ratio"] > 1.5
    assert rollout["finished_at"] - started["updated_at"] <= 2 * 0.5 + 0.25  # a tick may wait for a busy loop
    assert load.failed() == []
    assert {version for _, version in load.answers} == {"1", "2"}
    assert {version for _, version in load.answers[load.ended_at :]} == {"1"}


def test_a_healthy_version_is_promoted_and_the_old_one_unloaded(client: httpx.Client, repository: Path) -> None:
    publish(repository, "healthy", lambda path: deep_onnx(path, layers=LAYERS))
    start(client, "healthy", steps=[20, 50, 100], interval_s=0.5, min_samples=60)

    load = drive(client, "healthy", until=("promoted", "failed"), limit_s=30)

    rollout = status(client, "healthy")
    assert (rollout["state"], rollout["weight"]) == ("promoted", 100), rollout
    # 100 % is the promotion: no request would be left to the stable version to compare with.
    assert [check["weight"] for check in rollout["checks"] if check["outcome"] == "pass"] == [20, 50]
    assert load.failed() == []
    assert {version for _, version in load.answers[load.ended_at :]} == {"2"}
    assert versions(client, "healthy") == {"2": "READY"}


def test_a_paused_rollout_holds_its_exact_share_on_every_protocol_then_resumes_and_aborts(
    client: httpx.Client, server: RunningServer, repository: Path
) -> None:
    publish(repository, "steered", lambda path: deep_onnx(path, layers=LAYERS))
    start(client, "steered", steps=[10, 100], interval_s=600)

    paused = client.post("/v2/repository/models/steered/rollout/pause")
    assert (paused.status_code, paused.json()["state"]) == (200, "paused")
    served: list[str] = []
    for _ in range(60):
        served.append(client.post("/v2/models/steered/infer", json=BODY).json()["model_version"])
    for _ in range(20):
        answer = client.post("/v1/predict", json={"model": "steered", "inputs": [[0.25] * 64]})
        served.append(answer.json()["version"])
    with grpcclient.InferenceServerClient(server.grpc_address) as triton:
        tensor = grpcclient.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.full((1, 64), 0.25, dtype=np.float32))
        for _ in range(20):
            served.append(triton.infer("steered", [tensor]).get_response().model_version)
    assert served.count("2") == 10
    assert served.count("1") == 90
    # A request naming its version gets it, whatever the share.
    assert client.post("/v2/models/steered/versions/2/infer", json=BODY).json()["model_version"] == "2"

    assert client.post("/v2/repository/models/steered/rollout/resume").json()["state"] == "progressing"
    again = client.post("/v2/repository/models/steered/rollout", json={"version": 2})
    assert again.status_code == 400
    assert "abort it first" in again.json()["error"]

    aborted = client.post("/v2/repository/models/steered/rollout/abort").json()
    assert (aborted["state"], aborted["weight"], aborted["reason"]) == ("aborted", 0, "aborted by an operator")
    assert {client.post("/v2/models/steered/infer", json=BODY).json()["model_version"] for _ in range(20)} == {"1"}
    assert versions(client, "steered") == {"1": "READY"}
    refused = client.post("/v2/repository/models/steered/rollout/pause")
    assert refused.status_code == 400
    assert "aborted" in refused.json()["error"]


@pytest.mark.parametrize(
    ("body", "status_code", "message"),
    [
        ({"version": 2, "steps": [50, 10]}, 400, "strictly ascending"),
        ({"version": 2, "steps": [0, 100]}, 400, "from 1 to 100"),
        ({"version": 2, "steps": [100]}, 400, "a step below 100 is needed"),
        ({"version": 2, "interval_s": 0}, 400, "interval_s"),
        ({"version": 1}, 400, "is the one serving already"),
        ({"version": 9}, 404, "versions in the repository: 1"),
        ({"steps": [10]}, 400, "version"),
    ],
)
def test_a_rollout_that_cannot_start_is_refused_with_what_to_fix(
    client: httpx.Client, body: dict[str, Any], status_code: int, message: str
) -> None:
    response = client.post("/v2/repository/models/broken/rollout", json=body)

    assert response.status_code == status_code, response.text
    assert message in response.json()["error"]


def test_a_model_without_a_rollout_has_none_to_read_or_change(client: httpx.Client) -> None:
    for method, path in (("GET", ""), ("POST", "/pause"), ("POST", "/resume"), ("POST", "/abort")):
        response = client.request(method, f"/v2/repository/models/nothing_here/rollout{path}")
        assert response.status_code == 404
        assert "has no rollout" in response.json()["error"]
    unknown = client.post("/v2/repository/models/nothing_here/rollout", json={"version": 2})
    assert unknown.status_code == 404


def test_the_command_line_starts_reads_and_aborts_a_rollout(server: RunningServer, repository: Path) -> None:
    write_config(repository / "by_cli", CONFIG)
    deep_onnx(repository / "by_cli" / "1" / "model.onnx", layers=LAYERS)
    assert httpx.post(f"{server.url}/v2/repository/models/by_cli/load").status_code == 200
    deep_onnx(repository / "by_cli" / "2" / "model.onnx", layers=LAYERS)

    # The installed command once; the others in this process, where the interpreter is already up.
    command = [sys.executable, "-m", "modelserve", "rollout", "start", "by_cli", "--version", "2"]
    command += ["--steps", "5,100", "--interval", "10m", "--max-error-rate", "2%", "--url", server.url]
    started = subprocess.run(command, capture_output=True, text=True, timeout=60, env={"COLUMNS": "200"}, check=False)
    assert started.returncode == 0, started.stderr
    assert (
        "by_cli: progressing - version 2 takes 5 % (stable 1; step 1 of 2: 5 %, 100 %; every 600 s)" in started.stdout
    )

    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, ["rollout", *args, "--url", server.url], env={"COLUMNS": "200"})

    assert "progressing" in cli("status").stdout
    assert '"max_error_rate": 0.02' in cli("status", "by_cli", "--json").stdout
    aborted = cli("abort", "by_cli")
    assert aborted.exit_code == 0
    assert "by_cli: aborted" in aborted.stdout
    assert "aborted by an operator" in aborted.stdout
    refused = cli("pause", "by_cli")
    assert refused.exit_code == 1
    assert "400: the rollout of model 'by_cli' is aborted" in refused.stderr


def test_a_restarted_server_resumes_the_rollout_and_keeps_a_rolled_back_version_unloaded(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    # On PostgreSQL; the next test restarts on the default SQLite file, and tests/rollout/test_store.py
    # runs the store on both.
    repository = _repository(tmp_path, ("kept", "pinned"))
    arguments = ("--model-control-mode", "explicit", "--load-model", "*")
    env = {"DATABASE_URL": postgres.url(postgres.create_database())}
    with serve(repository, tmp_path / "first.log", *arguments, env=env) as first, httpx.Client(base_url=first.url) as c:
        for model in ("kept", "pinned"):
            publish(repository, model, lambda path: deep_onnx(path, layers=LAYERS))
            # More samples than the test sends: the analysis waits, and the share stays at 10 %.
            start(c, model, steps=[10, 100], interval_s=0.5, min_samples=1_000_000)
        assert [c.post("/v2/models/kept/infer", json=BODY).json()["model_version"] for _ in range(10)].count("2") == 1
        assert c.post("/v2/repository/models/pinned/rollout/abort").json()["state"] == "aborted"

    with (
        serve(repository, tmp_path / "second.log", *arguments, env=env) as second,
        httpx.Client(base_url=second.url) as c,
    ):
        resumed = status(c, "kept")
        assert (resumed["state"], resumed["weight"], resumed["step"]) == ("progressing", 10, 0)
        assert versions(c, "kept") == {"1": "READY", "2": "READY"}
        served = [c.post("/v2/models/kept/infer", json=BODY).json()["model_version"] for _ in range(100)]
        assert served.count("2") == 10
        # Version 2 is the newest in the repository, and the version policy (latest 1) would serve it:
        # the aborted rollout keeps version 1 serving instead.
        assert status(c, "pinned")["state"] == "aborted"
        assert versions(c, "pinned") == {"1": "READY"}
        assert {c.post("/v2/models/pinned/infer", json=BODY).json()["model_version"] for _ in range(10)} == {"1"}


def test_at_the_next_start_a_rollout_whose_version_left_is_rolled_back_and_one_stopped_while_loading_begins(
    tmp_path: Path,
) -> None:
    repository = _repository(tmp_path, ("gone", "crashed"))
    arguments = ("--model-control-mode", "explicit", "--load-model", "*")
    with serve(repository, tmp_path / "first.log", *arguments) as first, httpx.Client(base_url=first.url) as c:
        publish(repository, "gone", lambda path: deep_onnx(path, layers=LAYERS))
        start(c, "gone", steps=[10, 100], interval_s=600)
    shutil.rmtree(repository / "gone" / "2")
    # What a server killed during the new version's load leaves: the rollout stored, at no share yet.
    publish(repository, "crashed", lambda path: deep_onnx(path, layers=LAYERS))
    engine = open_engine(f"sqlite:///{tmp_path / 'cache' / 'history.sqlite3'}")
    limits = Thresholds(max_error_rate=0.01, max_latency_ratio=1.5, min_samples=1_000_000)
    RolloutStore(engine).save(Rollout.begin("crashed", 1, 2, [25, 100], 600.0, limits, time.time()))
    engine.dispose()

    with serve(repository, tmp_path / "second.log", *arguments) as second, httpx.Client(base_url=second.url) as c:
        gone = status(c, "gone")
        assert (gone["state"], gone["weight"]) == ("failed", 0)
        assert gone["reason"] == "version 2 did not load again at startup"
        assert {c.post("/v2/models/gone/infer", json=BODY).json()["model_version"] for _ in range(10)} == {"1"}
        crashed = status(c, "crashed")
        assert (crashed["state"], crashed["weight"], crashed["reason"]) == ("progressing", 25, "")
        served = [c.post("/v2/models/crashed/infer", json=BODY).json()["model_version"] for _ in range(100)]
        assert served.count("2") == 25


def test_a_breach_rolls_back_even_when_the_database_cannot_be_written(tmp_path: Path, postgres: PostgresServer) -> None:
    repository = _repository(tmp_path, ("unstored", "held"))
    database = postgres.create_database()
    env = {"DATABASE_URL": postgres.url(database)}
    arguments = ("--model-control-mode", "explicit", "--load-model", "*")
    with (
        serve(repository, tmp_path / "server.log", *arguments, env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        publish(repository, "unstored", failing_onnx)
        publish(repository, "held", lambda path: deep_onnx(path, layers=LAYERS))
        start(client, "held", steps=[10, 100], interval_s=600)
        start(client, "unstored", steps=[10, 100], interval_s=0.5, min_samples=5)
        postgres.drop_database(database)  # an outage: every write from now on fails

        load = drive(client, "unstored", until=("failed",), limit_s=20)

        assert status(client, "unstored")["reason"].startswith("error rate 100.00%")
        assert load.ended_at is not None
        assert all(code == 200 and version == "1" for code, version in load.answers[load.ended_at :])
        assert "cannot write the rollout of unstored (failed)" in server.output()
        publish_3 = repository / "unstored" / "3" / "model.onnx"
        deep_onnx(publish_3, layers=LAYERS)
        refused = client.post("/v2/repository/models/unstored/rollout", json={"version": 3})
        assert refused.status_code == 503
        assert "the rollouts' database could not be written (OperationalError)" in refused.json()["error"]
        # An operator's change that cannot be stored is not made.
        assert client.post("/v2/repository/models/held/rollout/pause").status_code == 503
        assert (status(client, "held")["state"], status(client, "held")["weight"]) == ("progressing", 10)


def test_with_authentication_on_a_rollout_needs_the_admin_scope(tmp_path: Path) -> None:
    repository = _repository(tmp_path, ("guarded",))
    arguments = ("--model-control-mode", "explicit", "--load-model", "guarded")
    with serve(repository, tmp_path / "server.log", *arguments, env={"API_KEYS": API_KEYS}) as server:
        publish(repository, "guarded", lambda path: deep_onnx(path, layers=LAYERS))
        path = f"{server.url}/v2/repository/models/guarded/rollout"
        as_infer = {"Authorization": f"Bearer {INFER_KEY}"}

        assert httpx.post(path, json={"version": 2}).status_code == 401
        refused = httpx.post(path, json={"version": 2}, headers=as_infer)
        assert refused.status_code == 403
        assert "needs the 'admin' scope" in refused.json()["error"]
        assert httpx.get(path, headers=as_infer).status_code == 403

        command = [sys.executable, "-m", "modelserve", "rollout", "start", "guarded", "--version", "2"]
        command += ["--interval", "10m", "--url", server.url, "--token", ADMIN_KEY]
        started = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert started.returncode == 0, started.stderr
        assert "guarded: progressing - version 2 takes 1 %" in started.stdout

"""The commands of docs/RUNBOOK.md and docs/TROUBLESHOOTING.md, run against a real server in trouble:
a broken model among good ones, requests that failed, logs in JSON.

Every command that can run without a cluster runs, and must succeed with output: `curl` and
`modelserve` against the server, and the `kubectl logs deploy/modelserve | jq ...` filters against the
server's own log. What needs a cluster or a GPU cannot run here and is listed, so that a command of
any other kind has to be made runnable or added to the list on purpose. The replication and failover
commands need regions (S3 stores, a router, probes): tests/regions/test_runbook.py, test_failover.py,
test_service.py and test_probes.py run them against two local ones.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import broken_repository
from tests.deploy.tools import tool
from tests.e2e.server import RunningServer, serve

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "RUNBOOK.md", ROOT / "docs" / "TROUBLESHOOTING.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LOGS = re.compile(r"^kubectl (-n model-serving )?logs deploy/model-serving( --previous)? \|")
NEEDS_A_CLUSTER = ("kubectl ", "nvidia-smi ")
NEEDS_A_GPU = "model_serving_gpu_"
NEEDS_REGIONS = ("python -m src.replication.", "python -m src.failover.")
REPLICATION_SERVICE = "localhost:9108"  # `modelserve regions serve`, scraped by tests/regions/test_service.py
NEEDS_PROBES = "model_serving_region_probe_"  # a server with PROBE_MODEL, scraped by tests/regions/test_probes.py
NEEDS_A_ROUTER = "haproxy.sock"  # HAProxy's runtime API, driven by tests/regions/test_failover.py
GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
BAD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": [0.5] * 15}]}


def commands(document: Path) -> list[str]:
    """Each command line of the document's bash blocks, continuation lines joined."""
    lines = []
    for match in FENCE.finditer(document.read_text()):
        if match[1] == "bash":
            lines += [line.strip() for line in match[2].replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def troubled(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with broken models beside the good ones, after good, malformed and misdirected requests."""
    root = tmp_path_factory.mktemp("runbook")
    repository = broken_repository(root / "model_repository", built_repository)
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as server:
        assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD).status_code == 200
        assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=BAD).status_code == 400
        assert httpx.post(f"{server.url}/v2/models/nowhere/infer", json=GOOD).status_code == 404
        server.access_lines(3)  # in the log the runbooks' filters read, whichever test runs first
        yield server


def shell(command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in bash with pipefail, finding `modelserve` in this venv and jq where `make tools` put it."""
    jq = Path(tool("jq"))
    libraries = ":".join(str(p) for p in (ROOT / ".tools" / "root" / "usr" / "lib").glob("*-linux-gnu"))
    env = {"PATH": f"{Path(sys.executable).parent}:{jq.parent}:/usr/bin:/bin", "LD_LIBRARY_PATH": libraries}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "COLUMNS": "200"},
    )


def runnable(command: str, server: RunningServer, scratch: Path) -> str:
    """The command as it runs here: addresses, placeholders and scratch files made concrete."""
    command = command.replace("localhost:8000", server.address).replace("localhost:8001", server.grpc_address)
    command = command.replace("<name>", "mlp").replace("/tmp/", f"{scratch}/")
    return LOGS.sub(f"cat {server.log} |", command)


@pytest.mark.parametrize("document", DOCS, ids=lambda path: path.name)
def test_every_command_that_can_run_here_runs(troubled: RunningServer, document: Path, tmp_path: Path) -> None:
    ran, elsewhere = 0, []
    for command in commands(document):
        if LOGS.match(command) is None and _elsewhere(command):
            elsewhere.append(command)
            continue
        result = shell(runnable(command, troubled, tmp_path))
        assert result.returncode == 0, f"{document.name}: `{command}` failed:\n{result.stdout}\n{result.stderr}"
        if " -o " in command:
            written = re.search(r"-o (\S+)", runnable(command, troubled, tmp_path))
            assert written is not None
            assert Path(written[1]).stat().st_size > 0, f"{document.name}: `{command}` wrote nothing"
        elif LOGS.match(command) is None:
            assert result.stdout.strip(), f"{document.name}: `{command}` printed nothing"
        ran += 1
    assert ran >= 15, f"only {ran} commands of {document.name} ran"
    assert all(_elsewhere(c) for c in elsewhere)


def _elsewhere(command: str) -> bool:
    """Whether ``command`` needs what this test has not: a cluster, a GPU, regions."""
    return command.startswith(NEEDS_A_CLUSTER + NEEDS_REGIONS) or any(
        needed in command for needed in (NEEDS_A_GPU, REPLICATION_SERVICE, NEEDS_PROBES, NEEDS_A_ROUTER)
    )


def test_the_log_filters_find_what_they_look_for(troubled: RunningServer) -> None:
    result = shell(
        runnable(f"kubectl -n model-serving logs deploy/model-serving | jq -c {_ERRORS!r}", troubled, Path())
    )
    assert result.returncode == 0, result.stderr
    errors = result.stdout.splitlines()
    assert any('"code":400' in line for line in errors), errors
    assert any('"model":"nowhere"' in line and '"code":404' in line for line in errors), errors


_ERRORS = 'select(.logger=="modelserve.access" and .status=="error") | {model, code, error}'

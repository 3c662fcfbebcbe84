"""Authentication on a real `modelserve serve`: keys from a file and RS256 tokens, through tritonclient
over HTTP and gRPC, the CLI's --token, startup errors, and logs that never show a credential."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.e2e.server import MODELSERVE, RunningServer, serve
from tests.server.credentials import ADMIN_KEY, INFER_KEY, bearer, rsa_key, token, write_public_key

ADMIN_TOKEN = token(rsa_key("signer"), scope="admin")
INFER_TOKEN = token(rsa_key("signer"), scope="infer")
FORGED_TOKEN = token(rsa_key("intruder"), scope="admin")
WRONG_KEY = "wrong-key-0123456789abcdef"
# Every credential this module sends: none of them may appear in the server's output.
CREDENTIALS = (ADMIN_KEY, INFER_KEY, ADMIN_TOKEN, INFER_TOKEN, FORGED_TOKEN, WRONG_KEY)


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Keys from a file, RS256 tokens from a PEM key, info-level JSON logs with an access line per request."""
    root = tmp_path_factory.mktemp("auth")
    repository = root / "model_repository"
    shutil.copytree(built_repository, repository)
    keys = root / "api-keys"
    keys.write_text(f"# operators\n{ADMIN_KEY}:admin\n\n# clients\n{INFER_KEY}:infer\n")
    environment = {"API_KEYS": str(keys), "JWT_PUBLIC_KEY_FILE": str(write_public_key(root, rsa_key("signer")))}
    arguments = ("--model-control-mode", "explicit", "--load-model", "*", "--log-level", "info")
    with serve(repository, root / "server.log", *arguments, env=environment) as running:
        yield running


def simple_inputs(module: type[httpclient.InferInput] | type[grpcclient.InferInput]) -> list[object]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [module("INPUT0", [1, 16], "INT32"), module("INPUT1", [1, 16], "INT32")]
    for item in inputs:
        item.set_data_from_numpy(a)
    return inputs


def test_tritonclient_http_sends_credentials_as_headers(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_server_ready()  # health is open
        with pytest.raises(InferenceServerException) as refused:
            client.infer("simple", simple_inputs(httpclient.InferInput))
        assert refused.value.status() == "401"
        assert refused.value.message() == "credentials required: send Authorization: Bearer <API key or JWT>"
        result = client.infer("simple", simple_inputs(httpclient.InferInput), headers=bearer(INFER_KEY))
        assert (result.as_numpy("OUTPUT0") == 2 * np.arange(16).reshape(1, 16)).all()
        assert client.get_model_metadata("simple", headers=bearer(INFER_TOKEN))["name"] == "simple"
        with pytest.raises(InferenceServerException) as forbidden:
            client.unload_model("iris", headers=bearer(INFER_TOKEN))
        assert forbidden.value.status() == "403"
        assert "needs the 'admin' scope" in forbidden.value.message()
        with pytest.raises(InferenceServerException) as forged:
            client.get_model_metadata("simple", headers=bearer(FORGED_TOKEN))
        assert forged.value.status() == "401"
        assert forged.value.message().startswith("token signature is not valid")
        client.load_model("iris", headers=bearer(ADMIN_KEY))


def test_tritonclient_grpc_sends_credentials_as_metadata(server: RunningServer) -> None:
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        assert client.is_server_live()  # ServerLive, ServerReady and ModelReady are open
        assert client.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as refused:
            client.infer("simple", simple_inputs(grpcclient.InferInput))
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        assert refused.value.message() == "credentials required: send Authorization: Bearer <API key or JWT>"
        with pytest.raises(InferenceServerException) as wrong:
            client.get_model_metadata("simple", headers={"authorization": f"Bearer {WRONG_KEY}"})
        assert wrong.value.status() == "StatusCode.UNAUTHENTICATED"
        assert wrong.value.message().startswith("API key or token not accepted")
        with pytest.raises(InferenceServerException) as forbidden:
            client.load_model("iris", headers={"authorization": f"Bearer {INFER_TOKEN}"})
        assert forbidden.value.status() == "StatusCode.PERMISSION_DENIED"
        assert forbidden.value.message() == "this endpoint needs the 'admin' scope; the credentials sent have: infer"
        credentials = {"authorization": f"Bearer {INFER_TOKEN}"}
        result = client.infer("simple", simple_inputs(grpcclient.InferInput), headers=credentials)
        assert (result.as_numpy("OUTPUT1") == 0).all()
        assert client.get_model_config("simple", headers=credentials).config.max_batch_size == 8
        client.load_model("iris", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    counted = scrape(server)
    assert counted[("model_serving_requests_total", "unknown", "grpc", "UNAUTHENTICATED")] >= 1
    assert counted[("model_serving_rejected_requests_total", "unknown", "unauthenticated")] >= 1
    assert counted[("model_serving_rejected_requests_total", "", "unauthenticated")] >= 1  # ModelMetadata
    assert counted[("model_serving_rejected_requests_total", "", "forbidden")] >= 1  # RepositoryModelLoad


def scrape(server: RunningServer) -> dict[tuple[str, ...], float]:
    """The request and refusal counters of /metrics (open by default), by name and label values."""
    counted: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == "model_serving_requests_total":
                labels = sample.labels
                counted[(sample.name, labels["model"], labels["protocol"], labels["code"])] = sample.value
            elif sample.name == "model_serving_rejected_requests_total":
                counted[(sample.name, sample.labels["model"], sample.labels["reason"])] = sample.value
    return counted


@pytest.mark.parametrize(
    ("headers", "code"), [(None, "UNAUTHENTICATED"), ({"authorization": f"Bearer {INFER_KEY}"}, None)]
)
def test_grpc_streams_need_credentials_too(server: RunningServer, headers: dict[str, str] | None, code: str) -> None:
    answers: queue.Queue[tuple[object, InferenceServerException | None]] = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers)
        try:
            try:
                client.async_stream_infer("simple", simple_inputs(grpcclient.InferInput), request_id="s1")
            except InferenceServerException:
                assert code is not None  # the refusal may close the stream before the request is written
            result, error = answers.get(timeout=30)
        finally:
            client.stop_stream()
    if code is None:
        assert error is None
        assert result.get_response().id == "s1"  # type: ignore[attr-defined]
    else:
        assert error is not None
        assert error.status() == f"StatusCode.{code}"


def modelserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELSERVE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def test_the_cli_sends_its_token(server: RunningServer) -> None:
    refused = modelserve("models", "list", "--url", server.url)
    assert refused.returncode == 1
    assert "401: credentials required" in " ".join(refused.stderr.split())
    listed = modelserve("models", "list", "--url", server.url, "--token", ADMIN_KEY)
    assert listed.returncode == 0, listed.stderr
    assert "simple" in listed.stdout
    forbidden = modelserve("models", "unload", "iris", "--url", server.url, env={"MODELSERVE_TOKEN": INFER_TOKEN})
    assert forbidden.returncode == 1
    assert "403" in forbidden.stderr
    loaded = modelserve("models", "load", "iris", "--url", server.url, env={"MODELSERVE_TOKEN": ADMIN_TOKEN})
    assert loaded.returncode == 0, loaded.stderr


def test_bench_sends_its_token_on_every_request(server: RunningServer) -> None:
    common = ("bench", "simple", "--url", server.url, "--grpc-address", server.grpc_address, "--json")
    load = ("--protocol", "http-binary", "--protocol", "grpc", "--concurrency", "2", "--duration", "0.3")
    run = modelserve(*common, *load, "--warmup", "0", "--token", INFER_KEY)
    assert run.returncode == 0, run.stderr
    points = [json.loads(line) for line in run.stdout.splitlines()]
    assert [p["protocol"] for p in points] == ["http-binary", "grpc"]
    assert all(p["errors"] == 0 and p["inferences_per_second"] > 0 for p in points)
    refused = modelserve(*common, *load, "--warmup", "0")
    assert refused.returncode == 1
    assert "401" in refused.stderr


def test_bad_security_settings_stop_startup_naming_them_but_not_their_value(
    built_repository: Path, tmp_path: Path
) -> None:
    short = modelserve("serve", "--model-repository", str(built_repository), env={"API_KEYS": "tiny-secret"})
    assert short.returncode == 2
    assert "invalid setting API_KEYS=(hidden): Value error, entry 1 is shorter than 16 characters" in short.stderr
    assert "tiny-secret" not in short.stderr
    missing = tmp_path / "absent.pem"
    result = modelserve("serve", "--model-repository", str(built_repository), "--jwt-public-key-file", str(missing))
    assert result.returncode == 2
    assert f"invalid setting JWT_PUBLIC_KEY_FILE='{missing}'" in " ".join(result.stderr.split())


def test_worker_processes_get_the_credentials(built_repository: Path, tmp_path: Path) -> None:
    """The options reach workers through the environment: the keys must arrive as they are, not masked."""
    key_file = write_public_key(tmp_path, rsa_key("signer"))
    options = ("--workers", "2", "--model-control-mode", "explicit", "--load-model", "iris")
    credentials = ("--api-keys", f"{INFER_KEY},{ADMIN_KEY}:admin", "--jwt-public-key-file", str(key_file))
    with serve(built_repository, tmp_path / "server.log", *options, *credentials) as running:
        body = {"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}
        for _ in range(6):
            assert httpx.post(f"{running.url}/v1/predict", json=body).status_code == 401
            assert httpx.post(f"{running.url}/v1/predict", json=body, headers=bearer(INFER_KEY)).status_code == 200
            assert httpx.get(f"{running.url}/v2", headers=bearer(INFER_TOKEN)).status_code == 200
        assert ADMIN_KEY not in running.output()


def test_no_credential_reaches_the_log(server: RunningServer) -> None:
    """Runs after the tests above: by now the server has logged their requests and refusals."""
    output = server.output()
    assert "authentication on: accepting 2 API key(s), 1 with admin and RS256 tokens" in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line.get("logger") == "modelserve.access" and line.get("code") == 401]
    assert refused, "the access log should hold the refused inference requests"
    assert refused[0]["error"].startswith("credentials required")
    for credential in CREDENTIALS:
        assert credential not in output
        assert credential[-12:] not in output  # nor a recognisable piece of one

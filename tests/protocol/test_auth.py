"""Authentication over HTTP, through the whole app: every refusal's status, body and challenge, the
scope of each kind of endpoint, which endpoints are open, and what the metrics count."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelserve.errors import Unauthenticated
from modelserve.protocol.errors import error_response
from tests.protocol.serving import TestClient, metric_value, metrics_of, serving, tensor, v2_body
from tests.server.credentials import (
    ADMIN_KEY,
    API_KEYS,
    INFER_KEY,
    SECRET,
    bearer,
    rsa_key,
    token,
    write_jwks,
    write_public_key,
)

ISSUER = "https://issuer.example"
AUDIENCE = "modelserve"
REALM = 'Bearer realm="modelserve"'
SEND = "send Authorization: Bearer <API key or JWT>"
MLP_BODY = v2_body(tensor("input", "FP32", [1, 16], [0.0] * 16))
INFER = "/v2/models/mlp/infer"


@pytest.fixture(scope="module")
def client(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """API keys, an HS256 secret and a JWKS of RS256 keys, with issuer and audience checked."""
    keys = write_jwks(tmp_path_factory.mktemp("jwks"), {"one": rsa_key("signer")})
    with serving(
        built_repository,
        api_keys=API_KEYS,
        jwt_secret=SECRET,
        jwt_jwks_file=keys,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def rsa_client(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """RS256 tokens only, from a PEM public key; no API keys."""
    pem = write_public_key(tmp_path_factory.mktemp("pem"), rsa_key("signer"))
    with serving(built_repository, load_models=["mlp"], jwt_public_key_file=pem) as client:
        yield client


def signed(**claims: object) -> str:
    """A token the main server accepts, unless ``claims`` spoil it."""
    return token(SECRET, **{"iss": ISSUER, "aud": AUDIENCE, **claims})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (lambda: None, f"credentials required: {SEND}"),
        (lambda: "Basic dXNlcjpwYXNzd29yZA==", f"malformed Authorization header: {SEND}"),
        (lambda: f"Token {INFER_KEY}", f"malformed Authorization header: {SEND}"),
        (lambda: "Bearer", f"malformed Authorization header: {SEND}"),
    ],
    ids=["no header", "basic", "other scheme", "no credential"],
)
def test_a_request_without_bearer_credentials_is_401_with_the_bare_challenge(
    client: TestClient, authorization: Callable[[], str | None], message: str
) -> None:
    header = authorization()
    headers = {"Authorization": header} if header is not None else {}
    for method, path in (("POST", INFER), ("POST", "/v1/predict"), ("GET", "/v2/models/mlp"), ("GET", "/v2")):
        response = client.request(method, path, content=MLP_BODY, headers=headers)
        assert response.status_code == 401, path
        assert response.json() == {"error": message, "trace_id": response.headers["x-trace-id"]}
        assert response.headers["www-authenticate"] == REALM


@pytest.mark.parametrize(
    ("credential", "message"),
    [
        (lambda: "not-a-key-0123456789abcdef", f"API key or token not accepted: {SEND} with a valid one"),
        (lambda: signed(exp=1_000_000_000), "token has expired; get a new one"),
        (lambda: signed(nbf=4_000_000_000), "token is not valid yet (nbf or iat is in the future); check the"),
        (lambda: signed(iss="https://elsewhere.example"), f"token issuer (iss) is not '{ISSUER}'"),
        (lambda: signed(aud="another-service"), f"token audience (aud) does not include '{AUDIENCE}'"),
        (lambda: token("a-different-secret-of-32-bytes-or-more", iss=ISSUER, aud=AUDIENCE), "token signature is not"),
        (lambda: token(rsa_key("intruder"), kid="one", iss=ISSUER, aud=AUDIENCE), "token signature is not valid"),
        (lambda: token(None, iss=ISSUER, aud=AUDIENCE), "token algorithm is not accepted; this server verifies"),
        (lambda: signed(exp=None), "token has no expiry (exp); this server accepts only tokens that expire"),
        (lambda: "eyJhbGciOiJIUzI1NiJ9.garbage.garbage", "token is not a valid JWT"),
    ],
    ids=["wrong key", "expired", "nbf", "iss", "aud", "secret", "rsa key", "alg none", "no exp", "garbage"],
)
def test_a_bad_credential_is_401_invalid_token_saying_what_is_wrong(
    client: TestClient, credential: Callable[[], str], message: str
) -> None:
    sent = credential()
    for method, path in (("POST", INFER), ("POST", "/v1/predict"), ("POST", "/v2/repository/index")):
        response = client.request(method, path, content=MLP_BODY, headers=bearer(sent))
        assert response.status_code == 401, path
        error = response.json()["error"]
        assert error.startswith(message)
        assert sent not in error
        assert response.headers["www-authenticate"] == (f'{REALM}, error="invalid_token", error_description="{error}"')


def test_an_hs256_token_is_refused_by_a_server_with_only_an_rsa_key(rsa_client: TestClient) -> None:
    response = rsa_client.post(INFER, content=MLP_BODY, headers=bearer(token(SECRET)))
    assert response.status_code == 401
    assert response.json() == {
        "error": "token algorithm is not accepted; this server verifies RS256 tokens",
        "trace_id": response.headers["x-trace-id"],
    }
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    unsigned = rsa_client.post(INFER, content=MLP_BODY, headers=bearer(token(None)))
    assert unsigned.status_code == 401
    accepted = rsa_client.post(INFER, content=MLP_BODY, headers=bearer(token(rsa_key("signer"))))
    assert accepted.status_code == 200, accepted.text
    missing = rsa_client.post(INFER, content=MLP_BODY, headers=bearer(ADMIN_KEY))
    assert missing.status_code == 401  # no API keys on this server


ADMIN_ROUTES = [
    ("POST", "/v2/repository/index", 200),
    ("POST", "/v2/repository/models/nonexistent/unload", 404),
    ("POST", "/v1/models/mlp/load?model_format=tensorrt", 400),
    ("POST", "/v1/models/nonexistent/unload", 404),
    ("GET", "/v2/systemsharedmemory/status", 200),
    ("GET", "/v2/cudasharedmemory/status", 200),
    ("GET", "/debug/profile?seconds=120", 400),
]
INFER_ROUTES = [
    ("POST", INFER, 200),
    ("POST", "/v2/models/mlp/versions/1/infer", 200),
    ("GET", "/v2", 200),
    ("GET", "/v2/models/mlp", 200),
    ("GET", "/v2/models/mlp/config", 200),
    ("GET", "/v2/models/mlp/stats", 200),
    ("GET", "/v2/models/stats", 200),
    ("GET", "/no/such/route", 404),
    ("GET", "/docs", 200),
]


@pytest.mark.parametrize(("method", "path", "status"), ADMIN_ROUTES)
def test_infer_credentials_on_an_admin_endpoint_are_403(
    client: TestClient, method: str, path: str, status: int
) -> None:
    for credential in (INFER_KEY, signed(scope="infer")):
        response = client.request(method, path, headers=bearer(credential))
        assert response.status_code == 403
        assert response.json() == {
            "error": "this endpoint needs the 'admin' scope; the credentials sent have: infer",
            "trace_id": response.headers["x-trace-id"],
        }
        assert response.headers["www-authenticate"] == f'{REALM}, error="insufficient_scope", scope="admin"'


@pytest.mark.parametrize(("method", "path", "status"), ADMIN_ROUTES + INFER_ROUTES)
def test_admin_credentials_reach_every_endpoint(client: TestClient, method: str, path: str, status: int) -> None:
    body = MLP_BODY if path.endswith("/infer") else None
    for credential in (ADMIN_KEY, signed(scope="admin"), signed(scope=None, scopes=["admin"])):
        response = client.request(method, path, content=body, headers=bearer(credential))
        assert response.status_code == status, f"{path}: {response.text}"


@pytest.mark.parametrize(("method", "path", "status"), INFER_ROUTES)
def test_infer_credentials_reach_inference_and_metadata(
    client: TestClient, method: str, path: str, status: int
) -> None:
    body = MLP_BODY if path.endswith("/infer") else None
    for credential in (INFER_KEY, signed()):
        assert client.request(method, path, content=body, headers=bearer(credential)).status_code == status
    assert client.request(method, path, content=body).status_code == 401  # unknown routes too: no 404 for strangers


def test_v1_predict_with_credentials(client: TestClient) -> None:
    document = {"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}
    response = client.post("/v1/predict", json=document, headers=bearer(signed()))
    assert response.status_code == 200
    assert response.json()["outputs"]["predict"] == [0]


def test_a_token_without_a_known_scope_is_403_even_for_inference(client: TestClient) -> None:
    response = client.post(INFER, content=MLP_BODY, headers=bearer(signed(scope="openid profile")))
    assert response.status_code == 403
    assert response.json() == {
        "error": "this endpoint needs the 'infer' scope; the credentials sent have: none",
        "trace_id": response.headers["x-trace-id"],
    }
    assert response.headers["www-authenticate"] == f'{REALM}, error="insufficient_scope", scope="infer"'


def test_health_and_metrics_are_open_by_default(client: TestClient) -> None:
    for path in ("/health", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/docs").status_code == 401
    assert client.get("/openapi.json").status_code == 401


def test_refusals_are_counted_and_never_under_a_callers_model_name(client: TestClient) -> None:
    before = metrics_of(client)
    client.post("/v2/models/made-up-by-a-stranger/infer", content=MLP_BODY)
    client.post(INFER, content=MLP_BODY, headers=bearer(INFER_KEY + "-wrong"))
    client.post("/v1/predict", content=b"{}", headers=bearer(signed(scope="profile")))
    client.post("/v2/repository/index", headers=bearer(INFER_KEY))
    client.get("/v2/models/mlp")
    after = metrics_of(client)

    def grew(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    rejected = "model_serving_rejected_requests_total"
    assert grew(rejected, model="unknown", reason="unauthenticated") == 2
    assert grew(rejected, model="unknown", reason="forbidden") == 1
    assert grew(rejected, model="", reason="forbidden") == 1
    assert grew(rejected, model="", reason="unauthenticated") == 1
    requests = "model_serving_requests_total"
    assert grew(requests, model="unknown", protocol="http", code="401", status="error") == 2
    assert grew(requests, model="unknown", protocol="http_v1", code="403", status="error") == 1
    assert not any("made-up-by-a-stranger" in str(labels) for samples in after.values() for labels, _ in samples)


def test_the_server_keeps_serving_after_refusals(client: TestClient) -> None:
    for attempt in range(50):
        credential = None if attempt % 2 else bearer(f"guess-number-{attempt:08d}")
        assert client.post(INFER, content=MLP_BODY, headers=credential).status_code == 401
    response = client.post(INFER, content=MLP_BODY, headers=bearer(INFER_KEY))
    assert response.status_code == 200
    assert response.json()["model_name"] == "mlp"


def test_open_endpoints_are_configurable(built_repository: Path) -> None:
    with serving(
        built_repository,
        load_models=[],
        api_keys=API_KEYS,
        auth_open_endpoints=["docs"],
        ready_headers=bearer(INFER_KEY),
    ) as docs_only:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert docs_only.get(path).status_code == 200, path
        for path in ("/health", "/health/ready", "/v2/health/live", "/metrics"):
            assert docs_only.get(path).status_code == 401, path
            assert docs_only.get(path, headers=bearer(INFER_KEY)).status_code == 200, path
    with serving(
        built_repository, load_models=[], api_keys=API_KEYS, auth_open_endpoints=[], ready_headers=bearer(INFER_KEY)
    ) as closed:
        for path in ("/docs", "/openapi.json", "/health", "/v2/health/ready", "/metrics"):
            assert closed.get(path).status_code == 401, path
            assert closed.get(path, headers=bearer(ADMIN_KEY)).status_code == 200, path


def test_a_challenge_stays_one_quoted_printable_string() -> None:
    """A configured issuer may hold a quote or a non-ASCII letter; the header must still parse."""
    response = error_response(
        Unauthenticated("token issuer (iss) is not 'https://é.example/\"x\\\\'", invalid_token=True)
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'{REALM}, error="invalid_token", error_description="token issuer (iss) is not \'https://?.example/?x??\'"'
    )
    assert json.loads(response.body)["error"] == "token issuer (iss) is not 'https://é.example/\"x\\\\'"

"""The guard itself: API keys, every way a token can be refused, and the scope each endpoint needs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from modelserve.config import EndpointGroup
from modelserve.errors import Forbidden, Unauthenticated
from modelserve.server.auth import Guard, Scope, TokenVerifier, load_jwks, load_public_key, parse_api_keys
from tests.server.credentials import ADMIN_KEY, API_KEYS, INFER_KEY, SECRET, rsa_key, token, write_jwks

ISSUER = "https://issuer.example"
AUDIENCE = "modelserve"
DEFAULT_OPEN = (EndpointGroup.HEALTH, EndpointGroup.METRICS)


def guard(open_groups: tuple[EndpointGroup, ...] = DEFAULT_OPEN, **verifier: object) -> Guard:
    tokens = TokenVerifier(**verifier) if verifier else None  # type: ignore[arg-type]
    return Guard(parse_api_keys(API_KEYS), tokens, open_groups)


def refusal(check: Guard, authorization: str | None, needed: Scope = Scope.INFER) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        check.check(authorization, needed)
    return caught.value


# -- API keys ------------------------------------------------------------------------------------------


def test_api_keys_give_their_scopes_and_admin_implies_infer() -> None:
    keys = parse_api_keys(f" {ADMIN_KEY}:admin , {INFER_KEY}:infer,, other-key-0123456789 ")
    assert [key.scopes for key in keys] == [
        frozenset({Scope.ADMIN, Scope.INFER}),
        frozenset({Scope.INFER}),
        frozenset({Scope.INFER}),
    ]
    assert keys[0].digest == hashlib.sha256(ADMIN_KEY.encode()).digest()
    check = guard()
    assert check.authenticate(f"Bearer {ADMIN_KEY}") == {Scope.ADMIN, Scope.INFER}
    assert check.authenticate(f"bearer   {INFER_KEY}") == {Scope.INFER}


def test_api_keys_are_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# operators\n{ADMIN_KEY}:admin\n\n   # clients\n{INFER_KEY}\n")
    keys = parse_api_keys(str(path))
    assert [sorted(key.scopes) for key in keys] == [["admin", "infer"], ["infer"]]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a-long-enough-key-0001:root", "entry 1 ends with an unknown scope"),
        ("a-long-enough-key-0001,short", "entry 2 is shorter than 16 characters"),
        ("a-long-enough-key-0001,a-long-enough-key-0001:admin", "entry 2 repeats a key"),
        ("/etc/modelserve/no-such-keys", "looks like a file path, but no such file exists"),
    ],
)
def test_bad_api_keys_are_refused_without_showing_them(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_api_keys(value)
    assert "a-long-enough-key" not in str(caught.value)


def test_an_api_key_file_without_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="holds no key"):
        parse_api_keys(str(path))


# -- what a header can be -------------------------------------------------------------------------------


def test_no_credentials_is_refused_without_calling_it_an_invalid_token() -> None:
    error = refusal(guard(), None)
    assert error.message == "credentials required: send Authorization: Bearer <API key or JWT>"
    assert not error.invalid_token


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", INFER_KEY, "Token abc"])
def test_a_malformed_header_is_refused(header: str) -> None:
    error = refusal(guard(), header)
    assert error.message.startswith("malformed Authorization header: send Authorization: Bearer")
    assert not error.invalid_token


@pytest.mark.parametrize("credential", ["wrong-key-0123456789abcdef", INFER_KEY + "x", "a.b.c"])
def test_an_unknown_key_is_an_invalid_token(credential: str) -> None:
    error = refusal(guard(), f"Bearer {credential}")
    assert error.invalid_token
    assert error.message.startswith("API key or token not accepted")
    assert credential not in error.message


def test_an_infer_key_on_an_admin_endpoint_is_forbidden() -> None:
    with pytest.raises(Forbidden) as caught:
        guard().check(f"Bearer {INFER_KEY}", Scope.ADMIN)
    assert caught.value.scope == "admin"
    assert caught.value.message == "this endpoint needs the 'admin' scope; the credentials sent have: infer"
    guard().check(f"Bearer {ADMIN_KEY}", Scope.ADMIN)
    guard().check(f"Bearer {ADMIN_KEY}", Scope.INFER)


# -- tokens ---------------------------------------------------------------------------------------------


def hs_guard() -> Guard:
    return guard(secret=SECRET.encode(), issuer=ISSUER, audience=AUDIENCE)


def good(**claims: object) -> str:
    return token(SECRET, **{"iss": ISSUER, "aud": AUDIENCE, **claims})  # type: ignore[arg-type]


def test_a_valid_token_gives_its_scopes_from_scope_or_scopes() -> None:
    check = hs_guard()
    assert check.authenticate(f"Bearer {good()}") == {Scope.INFER}
    assert check.authenticate(f"Bearer {good(scope='admin openid')}") == {Scope.ADMIN, Scope.INFER}
    assert check.authenticate(f"Bearer {good(scope=None, scopes=['admin'])}") == {Scope.ADMIN, Scope.INFER}
    assert check.authenticate(f"Bearer {good(scope='profile')}") == frozenset()
    with pytest.raises(Forbidden):
        check.check(f"Bearer {good(scope='profile')}", Scope.INFER)


def test_a_token_is_remembered_only_until_it_expires() -> None:
    check = hs_guard()
    expires = int(time.time()) + 2
    credential = good(exp=expires)
    assert check.authenticate(f"Bearer {credential}") == {Scope.INFER}
    assert check.authenticate(f"Bearer {credential}") == {Scope.INFER}  # from what was remembered
    deadline = time.monotonic() + 5
    while time.time() < expires:  # the clock passing exp is the event waited for
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert refusal(check, f"Bearer {credential}").message == "token has expired; get a new one"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 10}, "token has expired; get a new one"),
        ({"nbf": int(time.time()) + 3600}, "token is not valid yet (nbf or iat is in the future)"),
        ({"exp": None}, "token has no expiry (exp); this server accepts only tokens that expire"),
        ({"iss": "https://elsewhere.example"}, f"token issuer (iss) is not '{ISSUER}'"),
        ({"iss": None}, f"token issuer (iss) is not '{ISSUER}'"),
        ({"aud": "another-service"}, f"token audience (aud) does not include '{AUDIENCE}'"),
        ({"aud": None}, f"token audience (aud) does not include '{AUDIENCE}'"),
    ],
)
def test_a_token_with_bad_claims_is_refused(claims: dict[str, object], message: str) -> None:
    error = refusal(hs_guard(), f"Bearer {good(**claims)}")
    assert error.invalid_token
    assert error.message.startswith(message)


def test_without_issuer_and_audience_settings_those_claims_are_not_checked() -> None:
    check = guard(secret=SECRET.encode())
    assert check.authenticate(f"Bearer {token(SECRET, iss='anyone', aud='anything')}") == {Scope.INFER}


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = token("another-secret-of-at-least-32-bytes-xyz", iss=ISSUER, aud=AUDIENCE)
    error = refusal(hs_guard(), f"Bearer {forged}")
    assert error.message.startswith("token signature is not valid")


def test_an_unsigned_token_is_refused() -> None:
    error = refusal(hs_guard(), f"Bearer {token(None, iss=ISSUER, aud=AUDIENCE)}")
    assert error.message == "token algorithm is not accepted; this server verifies HS256 tokens"


def test_an_hs256_token_is_refused_when_only_rsa_keys_are_configured() -> None:
    check = guard(public_key=rsa_key("signer").private.public_key())
    error = refusal(check, f"Bearer {token(SECRET)}")
    assert error.message == "token algorithm is not accepted; this server verifies RS256 tokens"
    assert check.authenticate(f"Bearer {token(rsa_key('signer'))}") == {Scope.INFER}


def test_an_hs256_token_keyed_with_the_public_key_is_refused() -> None:
    """The classic confusion: the RSA public key (which anyone may have) used as an HMAC secret."""
    forged = _hs256(rsa_key("signer").public_pem, {"scope": "admin", "exp": int(time.time()) + 600})
    both = guard(secret=SECRET.encode(), public_key=rsa_key("signer").private.public_key())
    assert refusal(both, f"Bearer {forged}").message.startswith("token signature is not valid")
    rsa_only = guard(public_key=rsa_key("signer").private.public_key())
    assert refusal(rsa_only, f"Bearer {forged}").message.startswith("token algorithm is not accepted")


def test_an_rs256_token_of_another_key_is_refused() -> None:
    check = guard(public_key=rsa_key("signer").private.public_key())
    error = refusal(check, f"Bearer {token(rsa_key('intruder'))}")
    assert error.message.startswith("token signature is not valid")


def test_a_jwks_key_is_chosen_by_the_token_kid(tmp_path: Path) -> None:
    keys = load_jwks(write_jwks(tmp_path, {"one": rsa_key("signer"), "two": rsa_key("second")}))
    check = guard(jwks=keys)
    assert check.authenticate(f"Bearer {token(rsa_key('second'), kid='two')}") == {Scope.INFER}
    assert check.authenticate(f"Bearer {token(rsa_key('signer'), kid='one')}") == {Scope.INFER}
    wrong_kid = refusal(check, f"Bearer {token(rsa_key('second'), kid='one')}")
    assert wrong_kid.message.startswith("token signature is not valid")
    unknown = refusal(check, f"Bearer {token(rsa_key('second'), kid='three')}")
    assert unknown.message.startswith("token key id (kid) names none of the server's keys")
    assert refusal(check, f"Bearer {token(rsa_key('second'))}").message.startswith("token key id (kid)")


def test_garbage_that_looks_like_a_token_is_refused() -> None:
    assert refusal(hs_guard(), "Bearer not.a.jwt").message == "token is not a valid JWT"


# -- key files -------------------------------------------------------------------------------------------


def test_key_files_that_cannot_serve_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read .*missing\.pem: No such file or directory"):
        load_public_key(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=r"cannot read .*missing\.json: No such file or directory"):
        load_jwks(tmp_path / "missing.json")
    (tmp_path / "garbage.pem").write_text("not a key")
    with pytest.raises(ValueError, match="is not a PEM public key"):
        load_public_key(tmp_path / "garbage.pem")
    (tmp_path / "small.pem").write_bytes(rsa_key("small", 1024).public_pem)
    with pytest.raises(ValueError, match="is a 1024-bit RSA key; use at least 2048 bits"):
        load_public_key(tmp_path / "small.pem")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not a JWKS document"):
        load_jwks(tmp_path / "bad.json")
    (tmp_path / "hmac.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}))
    with pytest.raises(ValueError, match="holds no RSA public key for RS256"):
        load_jwks(tmp_path / "hmac.json")


# -- which endpoint needs what ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "needed"),
    [
        ("/health", None),
        ("/health/ready", None),
        ("/v2/health/live", None),
        ("/metrics", None),
        ("/docs", Scope.INFER),
        ("/openapi.json", Scope.INFER),
        ("/healthz", Scope.INFER),
        ("/metrics/", Scope.INFER),
        ("/v2", Scope.INFER),
        ("/v2/models/mlp", Scope.INFER),
        ("/v2/models/mlp/infer", Scope.INFER),
        ("/v2/models/mlp/versions/1/stats", Scope.INFER),
        ("/v1/predict", Scope.INFER),
        ("/no/such/route", Scope.INFER),
        ("/v2/repository/index", Scope.ADMIN),
        ("/v2/repository/models/mlp/load", Scope.ADMIN),
        ("/v1/models/mlp/load", Scope.ADMIN),
        ("/v1/models/mlp/unload", Scope.ADMIN),
        ("/v2/systemsharedmemory/status", Scope.ADMIN),
        ("/v2/cudasharedmemory/region/x/register", Scope.ADMIN),
        ("/debug/profile", Scope.ADMIN),
    ],
)
def test_http_paths_need_their_scope(path: str, needed: Scope | None) -> None:
    assert guard().http_scope(path) == needed


def test_open_endpoint_groups_are_configurable() -> None:
    docs_only = guard((EndpointGroup.DOCS,))
    assert [docs_only.http_scope(p) for p in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")] == [
        None
    ] * 4
    assert docs_only.http_scope("/health") == Scope.INFER
    assert docs_only.http_scope("/metrics") == Scope.INFER
    closed = guard(())
    assert {closed.http_scope(p) for p in ("/health", "/v2/health/ready", "/metrics", "/docs")} == {Scope.INFER}
    assert closed.grpc_scope("/inference.GRPCInferenceService/ServerLive") == Scope.INFER


@pytest.mark.parametrize(
    ("method", "needed"),
    [
        ("ServerLive", None),
        ("ServerReady", None),
        ("ModelReady", None),
        ("ServerMetadata", Scope.INFER),
        ("ModelMetadata", Scope.INFER),
        ("ModelConfig", Scope.INFER),
        ("ModelStatistics", Scope.INFER),
        ("ModelInfer", Scope.INFER),
        ("ModelStreamInfer", Scope.INFER),
        ("RepositoryIndex", Scope.ADMIN),
        ("RepositoryModelLoad", Scope.ADMIN),
        ("RepositoryModelUnload", Scope.ADMIN),
        ("SystemSharedMemoryRegister", Scope.ADMIN),
        ("CudaSharedMemoryStatus", Scope.ADMIN),
        ("TraceSetting", Scope.ADMIN),
        ("LogSettings", Scope.ADMIN),
        ("NoSuchMethod", Scope.INFER),
    ],
)
def test_grpc_methods_need_their_scope(method: str, needed: Scope | None) -> None:
    assert guard().grpc_scope(f"/inference.GRPCInferenceService/{method}") == needed


def _hs256(secret: bytes, claims: dict[str, object]) -> str:
    """A token signed by hand: PyJWT itself refuses to use a PEM key as an HMAC secret."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing_input = f"{part(header)}.{part(json.dumps(claims).encode())}"
    return f"{signing_input}.{part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def test_the_summary_says_what_is_accepted_without_any_key() -> None:
    summary = guard(secret=SECRET.encode(), public_key=rsa_key("signer").private.public_key()).summary()
    assert summary == (
        "accepting 2 API key(s), 1 with admin and HS256 or RS256 tokens; "
        "open without credentials: /health, /metrics, /health/*, /v2/health/*"
    )
    assert ADMIN_KEY not in summary
    assert Guard([], TokenVerifier(secret=SECRET.encode()), ()).summary() == (
        "accepting HS256 tokens; open without credentials: nothing"
    )

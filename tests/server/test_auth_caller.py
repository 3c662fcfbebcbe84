"""Who a request authenticated as, for its access line: an API key's name (its fingerprint where
API_KEYS gives none) or a token's subject, set by the guard in the request's own context only."""

from __future__ import annotations

import contextvars
import hashlib

import pytest

from modelserve.errors import Forbidden, Unauthenticated
from modelserve.server.auth import Guard, Scope, TokenVerifier, caller, parse_api_keys
from tests.server.credentials import ADMIN_KEY, API_KEYS, INFER_KEY, SECRET, token


def who(check: Guard, credential: str, needed: Scope = Scope.INFER) -> str | None:
    """``caller()`` after a request with ``credential`` passed the guard, in a context of its own."""
    request = contextvars.Context()
    request.run(check.check, f"Bearer {credential}", needed)
    return request.run(caller)


def test_a_key_is_named_by_its_fingerprint_and_a_token_by_its_subject() -> None:
    check = Guard(parse_api_keys(API_KEYS), TokenVerifier(secret=SECRET.encode()))
    for key in (INFER_KEY, ADMIN_KEY):
        assert who(check, key) == "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    carol = token(SECRET, sub="carol")
    assert who(check, carol) == "carol"
    assert who(check, carol) == "carol"  # from the verified tokens remembered
    assert who(check, token(SECRET, sub=None)) is None


def test_a_named_key_goes_by_its_name_and_base64_padding_is_no_name() -> None:
    padded = "c2VjcmV0LWtleS1mb3ItdGVzdHM=="  # openssl rand -base64 ends keys with '='
    check = Guard(parse_api_keys(f"alice={INFER_KEY}:infer,ops.team={ADMIN_KEY}:admin,{padded}"), None)
    assert who(check, INFER_KEY) == "alice"
    assert who(check, ADMIN_KEY, Scope.ADMIN) == "ops.team"
    assert who(check, padded) == "key-" + hashlib.sha256(padded.encode()).hexdigest()[:12]
    with pytest.raises(Unauthenticated):
        check.check(f"Bearer alice={INFER_KEY}", Scope.INFER)  # the name is not part of the key


def test_a_refused_request_names_no_caller() -> None:
    check = Guard(parse_api_keys(API_KEYS), None)
    request = contextvars.Context()
    with pytest.raises(Forbidden):
        request.run(check.check, f"Bearer {INFER_KEY}", Scope.ADMIN)
    assert request.run(caller) is None

"""Core errors as HTTP responses and gRPC codes, with the status and code ``modelserve.errors`` classifies them as."""

from __future__ import annotations

import logging

import grpc
import orjson
from starlette.responses import Response

from modelserve.errors import Forbidden, ModelserveError, Unauthenticated, classify, public_message

log = logging.getLogger("modelserve.http")
REALM = 'Bearer realm="modelserve"'


def http_status(error: BaseException) -> int:
    """The HTTP status of an error, as ``modelserve.errors.CLASSIFICATION`` decides it."""
    return classify(error).http_status


def grpc_status(error: BaseException) -> grpc.StatusCode:
    """The gRPC code of an error, as ``modelserve.errors.CLASSIFICATION`` decides it."""
    return _GRPC_CODES[classify(error).grpc_code]


_GRPC_CODES = {code.name: code for code in grpc.StatusCode}


def error_response(error: Exception) -> Response:
    """``{"error": "..."}`` with the status the error maps to; server bugs are logged and 500."""
    if not isinstance(error, ModelserveError):
        log.exception("unhandled error", exc_info=error)
    status, message = http_status(error), public_message(error)
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    if isinstance(error, Unauthenticated | Forbidden):
        headers = {"WWW-Authenticate": challenge(error)}
    return Response(orjson.dumps({"error": message}), status, headers, media_type="application/json")


def challenge(error: Unauthenticated | Forbidden) -> str:
    """The ``WWW-Authenticate`` value of a refusal, as RFC 6750 (bearer tokens) spells it."""
    if isinstance(error, Forbidden):
        return f'{REALM}, error="insufficient_scope", scope="{error.scope}"'
    if error.invalid_token:
        return f'{REALM}, error="invalid_token", error_description="{_quotable(error.message)}"'
    return REALM


def _quotable(text: str) -> str:
    # RFC 6750 allows printable ASCII but " and \ in a description; a configured issuer might hold others.
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)

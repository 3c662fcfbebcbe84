"""The one place where core errors become HTTP statuses and gRPC codes: two tables, side by side."""

from __future__ import annotations

import logging
from typing import TypeVar

import grpc
import orjson
from starlette.responses import Response

from modelserve.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    Forbidden,
    InferenceFailed,
    InsufficientMemory,
    InvalidInput,
    ModelControlDisabled,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ModelserveError,
    OutOfMemory,
    Overloaded,
    PayloadTooLarge,
    ShuttingDown,
    Unauthenticated,
)

log = logging.getLogger("modelserve.http")
REALM = 'Bearer realm="modelserve"'

HTTP_STATUS: dict[type[ModelserveError], int] = {
    ModelNotFound: 404,
    ModelNotReady: 503,  # never 400: the request was fine, the model is not
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    PayloadTooLarge: 413,
    Overloaded: 429,
    DeadlineExceeded: 504,
    ShuttingDown: 503,
    ClientDisconnected: 499,  # nginx's "client closed request": no one reads it, the logs and metrics do
    ModelControlDisabled: 400,  # as Triton answers load/unload outside explicit mode
    ModelLoadError: 400,  # as Triton answers a failed load: the model's files are at fault
    InferenceFailed: 500,
    InsufficientMemory: 507,  # WebDAV's Insufficient Storage: the server cannot hold what was asked
    OutOfMemory: 503,  # the request was fine and may succeed when memory frees: retryable, not 500
}


T = TypeVar("T")

GRPC_STATUS: dict[type[ModelserveError], grpc.StatusCode] = {
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    ClientDisconnected: grpc.StatusCode.CANCELLED,
    ModelControlDisabled: grpc.StatusCode.FAILED_PRECONDITION,
    ModelLoadError: grpc.StatusCode.INVALID_ARGUMENT,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    InsufficientMemory: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OutOfMemory: grpc.StatusCode.UNAVAILABLE,
}


def _lookup(table: dict[type[ModelserveError], T], error: ModelserveError, default: T) -> T:
    # Walk the class hierarchy, so a subclass maps like its parent unless it has its own row.
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return default


def http_status(error: ModelserveError) -> int:
    """The HTTP status for an error."""
    return _lookup(HTTP_STATUS, error, 500)


def grpc_status(error: ModelserveError) -> grpc.StatusCode:
    """The gRPC code for an error."""
    return _lookup(GRPC_STATUS, error, grpc.StatusCode.INTERNAL)


def error_response(error: Exception) -> Response:
    """``{"error": "..."}`` with the status the error maps to; server bugs are logged and 500."""
    if isinstance(error, ModelserveError):
        status, message = http_status(error), error.message
    else:
        log.exception("unhandled error", exc_info=error)
        status, message = 500, f"internal server error ({type(error).__name__}); the server log has the details"
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

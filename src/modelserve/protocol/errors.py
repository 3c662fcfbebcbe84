"""The one place where core errors become HTTP statuses (the gRPC table belongs beside it)."""

from __future__ import annotations

import logging

import orjson
from starlette.responses import Response

from modelserve.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelControlDisabled,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ModelserveError,
    Overloaded,
    PayloadTooLarge,
)

log = logging.getLogger("modelserve.http")

HTTP_STATUS: dict[type[ModelserveError], int] = {
    ModelNotFound: 404,
    ModelNotReady: 503,  # never 400: the request was fine, the model is not
    InvalidInput: 400,
    PayloadTooLarge: 413,
    Overloaded: 429,
    DeadlineExceeded: 504,
    ModelControlDisabled: 400,  # as Triton answers load/unload outside explicit mode
    ModelLoadError: 400,  # as Triton answers a failed load: the model's files are at fault
    InferenceFailed: 500,
}


def http_status(error: ModelserveError) -> int:
    """The status for an error, found by walking its class hierarchy."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_response(error: Exception) -> Response:
    """``{"error": "..."}`` with the status the error maps to; server bugs are logged and 500."""
    if isinstance(error, ModelserveError):
        status, message = http_status(error), error.message
    else:
        log.exception("unhandled error", exc_info=error)
        status, message = 500, f"internal server error ({type(error).__name__}); the server log has the details"
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return Response(orjson.dumps({"error": message}), status, headers, media_type="application/json")

"""Core errors as HTTP responses and gRPC codes, with the status and code ``modelserve.errors`` classifies them as,
each naming the request's trace id, which its log lines carry."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import grpc
import orjson
from starlette.responses import Response

from modelserve.errors import Forbidden, ModelNotFound, ModelserveError, Unauthenticated, classify, public_message
from modelserve.observability.tracing import TRACE_ID_HEADER, current_trace_id

log = logging.getLogger("modelserve.http")
REALM = 'Bearer realm="modelserve"'
GRPC_TRACE_ID_KEY = TRACE_ID_HEADER.lower()  # gRPC metadata keys are lower-case


def http_status(error: BaseException) -> int:
    """The HTTP status of an error, as ``modelserve.errors.CLASSIFICATION`` decides it."""
    return classify(error).http_status


def grpc_status(error: BaseException) -> grpc.StatusCode:
    """The gRPC code of an error, as ``modelserve.errors.CLASSIFICATION`` decides it."""
    return grpc.StatusCode[classify(error).grpc_code]


def error_response(error: Exception, *, openai: bool = False) -> Response:
    """``{"error": "...", "trace_id": "..."}`` with the status the error maps to; server bugs are logged
    and 500. The request's trace id is in the ``X-Trace-Id`` header too, for a caller that reads no body:
    it finds the request's log lines. ``openai``: the error as OpenAI's API answers one (``openai_error``)."""
    if not isinstance(error, ModelserveError):
        log.exception("unhandled error", exc_info=error)
    status = http_status(error)
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    if isinstance(error, Unauthenticated | Forbidden):
        headers = {"WWW-Authenticate": challenge(error)}
    if openai:
        code = "model_not_found" if isinstance(error, ModelNotFound) else None
        return error_json(public_message(error), status, headers, openai_error(public_message(error), status, code))
    return error_json(public_message(error), status, headers)


def error_json(
    message: str, status: int, headers: dict[str, str] | None = None, error: dict[str, Any] | None = None
) -> Response:
    """An error answer, ``{"error": message, "trace_id": ...}`` (or ``error`` in its place, an error
    object), the trace id in ``X-Trace-Id`` too."""
    body: dict[str, Any] = {"error": error or message}
    headers = headers or {}
    if (trace_id := current_trace_id()) is not None:
        body["trace_id"] = headers[TRACE_ID_HEADER] = trace_id
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


# The error object's type by status, as OpenAI's API names them; the official SDKs raise their
# exception classes by status (BadRequestError, NotFoundError, RateLimitError...) and expose these.
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models"})


def validation_problems(errors: Iterable[Mapping[str, Any]]) -> str:
    """pydantic's errors as one line naming each field: ``messages.0.role: Input should be ...``. Whether
    FastAPI validated the body (its locations start with ``body``) or a route did, the message is the same."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'] if p not in ('path', 'query', 'body'))}: {e['msg']}" for e in errors
    )


def openai_error(message: str, status: int, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, ``{"message", "type", "param", "code"}``, as its API and vLLM's server send
    it under ``error``: for the OpenAI-compatible routes and their stream events."""
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"message": message, "type": kind, "param": None, "code": code}


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End a gRPC call with ``code`` and ``message``, and the request's trace id in the trailing metadata
    (``x-trace-id``), as HTTP names it in a header."""
    trace_id = current_trace_id()
    await context.abort(code, message, trailing_metadata=((GRPC_TRACE_ID_KEY, trace_id),) if trace_id else ())
    raise AssertionError("context.abort returned")  # it always raises


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

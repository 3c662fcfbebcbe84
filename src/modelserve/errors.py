"""The errors the core raises, free of any web framework, and what each one means to every consumer.

Each error type is classified once, in ``CLASSIFICATION`` at the end of this module: its HTTP status,
its gRPC code, how the traffic history counts it, the reason the rejection metric gives, whether the
model name the caller sent may label metrics, and whether it counts against the model's circuit breaker.
The protocols, the metrics, the history, the breaker and the logs all read that one table (``classify``),
so no consumer can disagree with another about what an error is. The tree::

    ModelserveError
    ├── ModelNotFound        the name or version is not in the repository
    ├── ModelNotReady        known, but not loaded (or still loading, or failed)
    │   ├── CircuitOpen      loaded, but its runtime failed request after request: refused for a while
    │   └── StoreUnavailable the model repository's store (S3, a network disk) does not answer now
    ├── InvalidInput         the request is malformed: shape, datatype, missing tensor, bad JSON
    ├── Unauthenticated      no credentials, or credentials the server does not accept
    ├── Forbidden            valid credentials without the scope the endpoint needs
    ├── PayloadTooLarge      the body exceeds MAX_INPUT_SIZE_MB
    ├── Overloaded           a bounded queue is full: retry later
    ├── DeadlineExceeded     the request's time ran out before it finished
    ├── ShuttingDown         the server is draining before it stops: retry on another replica
    ├── ClientDisconnected   the caller hung up while its request was queued: it never ran
    ├── ModelControlDisabled load/unload asked for while the control mode forbids it
    ├── ModelLoadError       the model's files or config cannot be loaded (names the file)
    ├── InsufficientMemory   a load refused: the process is above its memory limit
    ├── InferenceFailed      the runtime raised while executing a batch
    ├── DatabaseUnavailable  the server's database did not take a write it needed (a rollout's state)
    └── OutOfMemory          the runtime ran out of memory on a batch, and on its halves: retry later
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ModelserveError(Exception):
    """Base of every error the server answers with a message meant for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFound(ModelserveError):
    """The model, or the requested version of it, does not exist in the repository."""

    @classmethod
    def unknown(cls, name: str, version: int | str | None = None, detail: str = "") -> ModelNotFound:
        """The error in Triton's words, which clients match on (``Request for unknown model: 'NAME' is not
        found``), followed by ``detail``: where the server looked, or what it serves instead."""
        which = f"'{name}'" if version is None else f"'{name}' version {version}"
        return cls(f"Request for unknown model: {which} is not found" + (f"; {detail}" if detail else ""))


class ModelNotReady(ModelserveError):
    """The model exists but cannot serve now: not loaded, loading, unloading or failed."""


class CircuitOpen(ModelNotReady):
    """The model's circuit breaker is open after repeated runtime failures; retry after its cool-down."""


class StoreUnavailable(ModelNotReady):
    """The model repository could not be read (a store outage, a timeout): the request was fine, retry."""


class InvalidInput(ModelserveError):
    """The request cannot be executed as sent; the message says what to fix."""


class Unauthenticated(ModelserveError):
    """No credentials were sent, or the ones sent are not valid; the message says what to send.

    ``invalid_token`` tells a bad credential from a missing one: RFC 6750 answers only the former
    with ``error="invalid_token"``, so a client that sent nothing is not told its token was wrong.
    """

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class Forbidden(ModelserveError):
    """The caller is known but lacks ``scope``, which the endpoint needs."""

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class PayloadTooLarge(ModelserveError):
    """The request body is larger than the configured limit."""


class Overloaded(ModelserveError):
    """A bounded queue is full; the caller should back off and retry."""


class DeadlineExceeded(ModelserveError):
    """The request's deadline passed before its result was ready."""


class ShuttingDown(ModelserveError):
    """The server received SIGTERM: it finishes what it accepted and takes nothing new."""


class ClientDisconnected(ModelserveError):
    """The caller closed the connection while its request waited; the request left the queue unrun."""


class ModelControlDisabled(ModelserveError):
    """Loading or unloading at runtime is not allowed in the server's model control mode."""


class ModelLoadError(ModelserveError):
    """A model could not be loaded; the message names the file and the problem."""


class InsufficientMemory(ModelserveError):
    """A load was refused because the process's memory is above the soft limit; free some and retry."""


class InferenceFailed(ModelserveError):
    """The runtime raised while executing; every request in that batch gets this error."""


class DatabaseUnavailable(ModelserveError):
    """The server's database could not be written; nothing was changed, retry when it answers."""


class OutOfMemory(ModelserveError):
    """The runtime could not allocate memory for a batch, even split in two; a retry may find it free."""


class Outcome(StrEnum):
    """How a request ended, as the traffic history counts it: one column each, in this order."""

    OK = "ok"
    NOT_READY = "not_ready"  # the model was not loaded, loading or refused by its breaker: a cold start
    REJECTED = "rejected"  # refused by a limit: a full queue, draining, size, credentials
    INVALID = "invalid"
    TIMED_OUT = "timed_out"  # a deadline passed or the caller stopped waiting, either way
    FAILED = "failed"  # any other error, including the server's own bugs


@dataclass(frozen=True, slots=True)
class Classification:
    """What an error means, decided once per error type and read by every consumer."""

    http_status: int
    grpc_code: str  # the name of a ``grpc.StatusCode``: this module imports no web or RPC framework
    outcome: Outcome
    rejection: str | None = None  # ``model_serving_rejected_requests``' reason: refused before running
    trusted_name: bool = True  # False: the caller is not trusted, so the model it named labels nothing
    model_exists: bool = False  # the error itself says the model is in the repository (known, not serving)
    model_at_fault: bool = False  # the model failed, not the request: counts against its circuit breaker


CLASSIFICATION: dict[type[ModelserveError], Classification] = {
    ModelNotFound: Classification(404, "NOT_FOUND", Outcome.REJECTED, "model_not_found"),
    # Never 400: the request was fine, the model is not.
    ModelNotReady: Classification(503, "UNAVAILABLE", Outcome.NOT_READY, "model_not_ready", model_exists=True),
    CircuitOpen: Classification(503, "UNAVAILABLE", Outcome.NOT_READY, "circuit_open", model_exists=True),
    StoreUnavailable: Classification(503, "UNAVAILABLE", Outcome.NOT_READY, "store_unavailable"),
    InvalidInput: Classification(400, "INVALID_ARGUMENT", Outcome.INVALID, "invalid_input"),
    Unauthenticated: Classification(401, "UNAUTHENTICATED", Outcome.REJECTED, "unauthenticated", trusted_name=False),
    Forbidden: Classification(403, "PERMISSION_DENIED", Outcome.REJECTED, "forbidden", trusted_name=False),
    PayloadTooLarge: Classification(413, "RESOURCE_EXHAUSTED", Outcome.REJECTED, "too_large"),
    Overloaded: Classification(429, "RESOURCE_EXHAUSTED", Outcome.REJECTED, "queue_full"),
    DeadlineExceeded: Classification(504, "DEADLINE_EXCEEDED", Outcome.TIMED_OUT, "deadline_exceeded"),
    ShuttingDown: Classification(503, "UNAVAILABLE", Outcome.REJECTED, "shutting_down"),
    # nginx's "client closed request": no one reads it, the logs and metrics do.
    ClientDisconnected: Classification(499, "CANCELLED", Outcome.TIMED_OUT),
    # 400 as Triton answers load/unload outside explicit mode, and a failed load: the model's files are at fault.
    ModelControlDisabled: Classification(400, "FAILED_PRECONDITION", Outcome.FAILED),
    ModelLoadError: Classification(400, "INVALID_ARGUMENT", Outcome.FAILED),
    InferenceFailed: Classification(500, "INTERNAL", Outcome.FAILED, model_at_fault=True),
    DatabaseUnavailable: Classification(503, "UNAVAILABLE", Outcome.FAILED),
    # WebDAV's Insufficient Storage: the server cannot hold what was asked.
    InsufficientMemory: Classification(507, "RESOURCE_EXHAUSTED", Outcome.FAILED),
    # The request was fine and may succeed when memory frees: retryable, not 500.
    OutOfMemory: Classification(503, "UNAVAILABLE", Outcome.FAILED),
}
# Anything that is not a ModelserveError is the server's bug.
SERVER_BUG = Classification(500, "INTERNAL", Outcome.FAILED)


def classify(error: BaseException) -> Classification:
    """The classification of ``error``: its own type's row, else its nearest parent's, else a server bug."""
    return next((CLASSIFICATION[kind] for kind in type(error).__mro__ if kind in CLASSIFICATION), SERVER_BUG)


def public_message(error: BaseException) -> str:
    """What the caller and the access log are told: our message, or only the type of a server bug."""
    if isinstance(error, ModelserveError):
        return error.message
    return f"internal server error ({type(error).__name__}); the server log has the details"

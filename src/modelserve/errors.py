"""The errors the core raises, free of any web framework.

Protocols map them to status codes in one table each (``protocol/errors.py``), so the core never
decides what HTTP or gRPC says. The tree::

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
    └── OutOfMemory          the runtime ran out of memory on a batch, and on its halves: retry later
"""

from __future__ import annotations


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


class OutOfMemory(ModelserveError):
    """The runtime could not allocate memory for a batch, even split in two; a retry may find it free."""

"""A circuit breaker per model version: a model whose runtime keeps failing is refused for a while.

Without it, a model broken at runtime (a bad export, a GPU in a bad state) keeps taking requests that
each queue, run and fail, holding threads and batches that the healthy models need, and its callers
keep waiting for errors. After ``failures`` requests in a row fail in the runtime the breaker opens:
requests are refused at once with 503 and the reason. After ``cooldown_s`` it half-opens: one request
goes through as a trial; its success closes the breaker, its failure opens it again. Only runtime
failures count (``Classification.model_at_fault``); a caller's bad input, an expired deadline, a full
queue or a caller gone says nothing about the model. A trial that ends that way tested nothing: the
breaker stays open with its cool-down spent, so the next request is the next trial. Every outcome of
a trial ends the half-open state, or one inconclusive trial would refuse the model until it is unloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from modelserve.errors import CircuitOpen, ModelserveError, classify


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"  # requests flow
    OPEN = "open"  # requests are refused until the cool-down ends
    HALF_OPEN = "half_open"  # one trial request is running; the others are refused until it ends


class CircuitBreaker:
    """Counts a model version's consecutive runtime failures and refuses requests while it is open."""

    def __init__(
        self, name: str, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._last_error = ""

    def admit(self) -> bool:
        """Let a request through, or raise CircuitOpen saying why and for how long. True when the request
        is the trial of a half-open breaker: its caller must report how it ended to ``finished``."""
        if self.state is BreakerState.CLOSED:
            return False
        remaining = self._opened_at + self._cooldown_s - self._clock()
        if self.state is BreakerState.OPEN and remaining <= 0:
            self.state = BreakerState.HALF_OPEN  # this request is the trial
            return True
        wait = f"retry in {remaining:.0f} s" if remaining > 0 else "a trial request is running; retry shortly"
        raise CircuitOpen(
            f"model '{self.name}' is refused: its last {self._failures} request(s) failed in the runtime "
            f"(last: {self._last_error}); {wait} (circuit breaker, CIRCUIT_BREAKER_COOLDOWN_SEC)"
        )

    def finished(self, error: BaseException | None, trial: bool) -> None:
        """A request admitted by ``admit`` ended with ``error`` (None: it succeeded)."""
        if error is None:
            self.succeeded()
        elif classify(error).model_at_fault:
            self.failed(error.message if isinstance(error, ModelserveError) else repr(error))
        elif trial and self.state is BreakerState.HALF_OPEN:
            # The trial tested nothing: open, with the cool-down spent, so the next request is the trial.
            self.state, self._opened_at = BreakerState.OPEN, self._clock() - self._cooldown_s

    def succeeded(self) -> None:
        """A request ran: the model works."""
        self.state, self._failures = BreakerState.CLOSED, 0

    def failed(self, error: str) -> None:
        """A request failed in the runtime."""
        self._failures += 1
        self._last_error = error
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self.state, self._opened_at = BreakerState.OPEN, self._clock()

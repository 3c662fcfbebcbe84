"""A circuit breaker per model version: a model whose runtime keeps failing is refused for a while.

Without it, a model broken at runtime (a bad export, a GPU in a bad state) keeps taking requests that
each queue, run and fail, holding threads and batches that the healthy models need, and its callers
keep waiting for errors. After ``failures`` requests in a row fail in the runtime the breaker opens:
requests are refused at once with 503 and the reason. After ``cooldown_s`` it half-opens: one request
goes through as a trial; its success closes the breaker, its failure opens it again. Only runtime
failures count; a caller's bad input or an expired deadline says nothing about the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from modelserve.errors import CircuitOpen


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

    def admit(self) -> None:
        """Let a request through, or raise CircuitOpen saying why and for how long."""
        if self.state is BreakerState.CLOSED:
            return
        remaining = self._opened_at + self._cooldown_s - self._clock()
        if self.state is BreakerState.OPEN and remaining <= 0:
            self.state = BreakerState.HALF_OPEN  # this request is the trial
            return
        wait = f"retry in {remaining:.0f} s" if remaining > 0 else "a trial request is running; retry shortly"
        raise CircuitOpen(
            f"model '{self.name}' is refused: its last {self._failures} request(s) failed in the runtime "
            f"(last: {self._last_error}); {wait} (circuit breaker, CIRCUIT_BREAKER_COOLDOWN_SEC)"
        )

    def succeeded(self) -> None:
        """A request ran: the model works."""
        self.state, self._failures = BreakerState.CLOSED, 0

    def failed(self, error: str) -> None:
        """A request failed in the runtime."""
        self._failures += 1
        self._last_error = error
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self.state, self._opened_at = BreakerState.OPEN, self._clock()

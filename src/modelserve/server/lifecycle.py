"""SIGTERM and SIGINT drain the server before it stops, and the process then exits 0.

Uvicorn on its own stops accepting connections at once, gives open ones a grace period, and re-raises
the signal when done, so the process dies of SIGTERM. Kubernetes keeps sending traffic for a moment
after it sends SIGTERM, so modelserve instead keeps listening and answers: readiness turns 503 at
once, new requests get 503 (retry elsewhere), and the requests already accepted, queued or running,
finish. When none is left, or SHUTDOWN_GRACE_SEC has passed, uvicorn is told to stop as if it had
caught the signal itself, minus the re-raise; the app's shutdown then unloads the models.
A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from modelserve.server.state import ServerState

log = logging.getLogger("modelserve.server")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_POLL_S = 0.02


class Drain:
    """Takes SIGTERM/SIGINT over from uvicorn for one server process."""

    def __init__(self, state: ServerState, grace_s: float, in_flight: Callable[[], int]) -> None:
        self._state = state
        self._grace_s = grace_s
        self._in_flight = in_flight
        self._stoppers: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Handle the signals on the running loop; outside the main thread (an in-process test), do nothing."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            self._stoppers[sig] = signal.getsignal(sig)  # uvicorn's Server.handle_exit, when uvicorn runs us
            loop.add_signal_handler(sig, self._signalled, sig)

    def _signalled(self, sig: int) -> None:
        if self._task is not None:
            name, left = signal.Signals(sig).name, self._in_flight()
            log.warning("second %s: stopping without waiting for %d request(s)", name, left)
            self._task.cancel()
            self._stop(sig)
            return
        self._state.draining = True
        log.info(
            "%s: draining: %d request(s) in flight, up to %g s (SHUTDOWN_GRACE_SEC)",
            signal.Signals(sig).name,
            self._in_flight(),
            self._grace_s,
        )
        self._task = asyncio.get_running_loop().create_task(self._drain(sig))

    async def _drain(self, sig: int) -> None:
        started = time.monotonic()
        deadline = started + self._grace_s
        # Polled: an event set by each request's end would cost every request, for the sake of one shutdown.
        while (left := self._in_flight()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_POLL_S)
        if left:
            log.error("SHUTDOWN_GRACE_SEC (%g s) ran out with %d request(s) in flight", self._grace_s, left)
        else:
            log.info("drained in %.3f s", time.monotonic() - started)
        self._stop(sig)

    def _stop(self, sig: int) -> None:
        stopper = self._stoppers.get(sig)
        server = getattr(stopper, "__self__", None)
        if isinstance(server, uvicorn.Server):
            # What handle_exit does, without recording the signal that uvicorn would re-raise at exit.
            server.force_exit = server.should_exit
            server.should_exit = True
        elif callable(stopper):
            frame: FrameType | None = None
            stopper(sig, frame)
        else:
            raise SystemExit(0)

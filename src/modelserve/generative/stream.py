"""A generation seen from the event loop: the engine thread's outputs as an async iterator.

Leaving the iteration early (the caller hung up) cancels the sequence, which the engine drops at its
next step, freeing its cache. A generation still running when its time is up (``REQUEST_TIMEOUT_SEC``)
raises DeadlineExceeded from the iteration, and is cancelled the same way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

from modelserve.errors import DeadlineExceeded
from modelserve.generative.params import SamplingParams
from modelserve.generative.scheduler import Output, Sequence

if TYPE_CHECKING:
    from modelserve.generative.process import EngineProcess
    from modelserve.generative.vllm_engine import VLLMEngine

_EXPIRED = Output("", 0)  # what the timer puts on the queue (this very object): no output, the time is up


class Generation:
    """One submitted sequence and the queue its outputs arrive on."""

    def __init__(
        self,
        engine: EngineProcess | VLLMEngine,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        timeout_s: float | None = None,
    ) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._queue: asyncio.Queue[Output] = asyncio.Queue()
        self._timeout_s = timeout_s
        self.sequence: Sequence = engine.submit(request_id, prompt_ids, params, self._deliver)
        # One timer for the whole generation, rather than a timeout around every token's wait.
        self._timer = None if timeout_s is None else self._loop.call_later(timeout_s, self._queue.put_nowait, _EXPIRED)

    def _deliver(self, _: Sequence, output: Output) -> None:
        if threading.get_ident() == self._thread:  # told on the loop itself (the engine process's reader)
            self._queue.put_nowait(output)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, output)

    async def outputs(self) -> AsyncIterator[Output]:
        """Each piece of new text until the last, which carries the finish reason. Pieces that arrived
        while the caller was busy with the last one come as one: a loaded server writes one event for
        them, not one each, and falls behind its engine less (vLLM's stream interval does the same)."""
        held: Output | None = None
        try:
            while True:
                output, held = held if held is not None else await self._queue.get(), None
                if output is _EXPIRED:
                    raise DeadlineExceeded(
                        f"generation did not finish within {self._timeout_s:g} s (REQUEST_TIMEOUT_SEC) after "
                        f"{len(self.sequence.output_ids)} tokens; it was stopped: ask for fewer max_tokens"
                    )
                while output.finish_reason is None and not self._queue.empty():
                    following = self._queue.get_nowait()
                    if following is _EXPIRED:
                        held = following
                        break
                    output = replace(
                        output,
                        text=output.text + following.text,
                        new_tokens=output.new_tokens + following.new_tokens,
                        finish_reason=following.finish_reason,
                    )
                yield output
                if output.finish_reason is not None:
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop the generation (at the engine's next step) unless it has ended; nothing is read after."""
        if self._timer is not None:
            self._timer.cancel()
        if self.sequence.finish_reason is None:
            self._engine.cancel(self.sequence)

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt."""
        return len(self.sequence.prompt_ids)

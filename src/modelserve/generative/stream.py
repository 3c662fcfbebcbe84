"""A generation seen from the event loop: the engine thread's outputs as an async iterator.

Leaving the iteration early (the caller hung up, a deadline passed) cancels the sequence, which the
engine drops at its next step, freeing its cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from modelserve.generative.params import SamplingParams
from modelserve.generative.scheduler import Sequence

if TYPE_CHECKING:
    from modelserve.generative.engine import Output, TransformersEngine


class Generation:
    """One submitted sequence and the queue its outputs arrive on."""

    def __init__(self, engine: TransformersEngine, request_id: str, prompt_ids: list[int], params: SamplingParams):
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Output] = asyncio.Queue()
        self.sequence: Sequence = engine.submit(request_id, prompt_ids, params, self._deliver)

    def _deliver(self, _: Sequence, output: Output) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, output)

    async def outputs(self) -> AsyncIterator[Output]:
        """Each piece of new text until the last, which carries the finish reason."""
        try:
            while True:
                output = await self._queue.get()
                yield output
                if output.finish_reason is not None:
                    return
        finally:
            if self.sequence.finish_reason is None:
                self._engine.cancel(self.sequence)

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt."""
        return len(self.sequence.prompt_ids)

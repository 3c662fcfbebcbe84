"""What the generative routes share, whichever API they speak (OpenAI's, the V2 generate extension, gRPC):
finding the model's engine, and accounting for a generation once it is answered."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelserve.errors import InferenceFailed, InvalidInput, ModelNotReady, ModelserveError
from modelserve.generative.runtime import GenerativeRuntime
from modelserve.generative.stream import Generation
from modelserve.models.manager import ModelManager
from modelserve.models.records import ModelVersion
from modelserve.repository.config import Platform
from modelserve.server.auth import caller
from modelserve.server.state import ServerState


async def generative_runtime(
    manager: ModelManager, model: str, version: int | None = None
) -> tuple[GenerativeRuntime, ModelVersion]:
    """The READY generative model (loaded on demand where the mode allows) and its version's record."""
    record = await manager.obtain(model, version)
    if record.spec is None or record.spec.platform is not Platform.LLM or record.runtime is None:
        platform = record.spec.platform.value if record.spec is not None else "unknown"
        raise InvalidInput(
            f"model '{model}' is a {platform} model, not a generative one; generation serves models with "
            "platform llm (GET /v1/models lists them)"
        )
    assert isinstance(record.runtime, GenerativeRuntime)
    return record.runtime, record


def admit(record: ModelVersion) -> ModelVersion:
    """Count a generation as a request inside its model version until ``account`` releases it: eviction
    leaves a model with requests inside alone, and the LRU order sees it used."""
    record.in_flight += 1
    record.last_used_ns = time.perf_counter_ns()
    return record


def account(
    state: ServerState,
    *,
    model: str,
    version: str,
    protocol: str,
    seconds: float,
    status: int | str,
    error: Exception | None,
    generation: Generation | None,
    completion: int,
    user: str | None = None,
    record: ModelVersion | None = None,
) -> None:
    """One answered request: its generation's metrics, and its access line with the tokens, the time to
    first token and who asked: the ``user`` the request named (OpenAI's field), else the credential it
    authenticated with (``caller``). ``status`` is an HTTP status, or a gRPC code's name."""
    if record is not None:
        record.in_flight -= 1
    extra: dict[str, Any] = {"user_id": user if user is not None else caller()}
    if generation is not None:
        sequence = generation.sequence
        state.metrics.generation.observe(model, sequence, completion)
        first = sequence.first_token
        extra |= {
            "input_tokens": generation.prompt_tokens,
            "output_tokens": completion,
            "ttft_ms": None if first is None else round((first - sequence.arrived) * 1000, 3),
            "finish_reason": sequence.finish_reason,
        }
    state.finish_request(model, version, protocol, status, seconds, error, extra)


GONE = "the caller hung up before its stream began; generation stopped"


class GenerationStream(StreamingResponse):
    """A generation's server-sent events, accounted for even when its body never starts: a caller gone
    before the answer's first bytes leaves the events unstarted, so their own ``finally`` never runs,
    and ``abandon`` does its work instead (stop the generation, account for the request)."""

    def __init__(self, events: AsyncGenerator[bytes], abandon: Callable[[], None]) -> None:
        super().__init__(self._watch(events), media_type="text/event-stream")
        self._abandon = abandon
        self._started = False

    async def _watch(self, events: AsyncGenerator[bytes]) -> AsyncIterator[bytes]:
        self._started = True
        try:
            async for chunk in events:
                yield chunk
        finally:
            await events.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._started:
                self._abandon()


def failure(model: str, reason: str | None) -> ModelserveError:
    """Why a generation ended without an answer: the engine failed, or it stopped (the model unloaded)."""
    if reason == "abort":
        return ModelNotReady(f"model '{model}' stopped generating: it was unloaded or the server is stopping")
    return InferenceFailed("generation failed; the server log has the details")

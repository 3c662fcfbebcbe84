"""The Open Inference Protocol's generate extension, as Triton and KServe serve it:
``POST /v2/models/{model}[/versions/{version}]/generate`` answers ``{"text_output": ...}`` at once,
``/generate_stream`` as server-sent events, one ``data: {"text_output": piece}`` per new piece of text.

Sampling parameters are read from the body's top level or its ``parameters`` object (Triton's clients
use both), with the same names and ranges as the OpenAI routes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from modelserve.errors import ClientDisconnected, DeadlineExceeded
from modelserve.generative.stream import Generation
from modelserve.models.records import ModelVersion
from modelserve.protocol import openapi
from modelserve.protocol.errors import error_response
from modelserve.protocol.generation import GONE, GenerationStream, account, admit, failure, generative_runtime
from modelserve.protocol.http import json_response
from modelserve.protocol.v2_codec import parse_version
from modelserve.server.state import ServerState

PROTOCOL = "http_generate"


class GenerateParameters(BaseModel):
    """Sampling parameters; unknown ones are ignored, as Triton ignores them."""

    model_config = ConfigDict(extra="ignore")

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    ignore_eos: bool = False


class GenerateRequest(GenerateParameters):
    """``POST .../generate`` and ``.../generate_stream``."""

    text_input: str = Field(min_length=1)
    parameters: GenerateParameters | None = None

    def sampling(self) -> dict[str, Any]:
        """What was asked, ``parameters`` over the top level; None where the model's defaults apply."""
        merged = self.model_dump(exclude={"text_input", "parameters"}, exclude_unset=True)
        if self.parameters is not None:
            merged |= self.parameters.model_dump(exclude_unset=True)
        stop = merged.get("stop")
        if isinstance(stop, str):
            merged["stop"] = (stop,)
        elif stop is not None:
            merged["stop"] = tuple(stop)
        if merged.get("top_k") is not None:
            merged["top_k"] = max(merged["top_k"], 0)
        return merged


def router(state: ServerState) -> APIRouter:
    """The generate extension's routes, bound to one server's state."""
    manager = state.manager
    api = APIRouter(tags=["Open Inference Protocol (V2)"])

    async def start(model: str, version: str | None, body: GenerateRequest) -> tuple[Generation, ModelVersion]:
        runtime, record = await generative_runtime(manager, model, parse_version(version))
        prompt_ids = await runtime.engine.tokenize(body.text_input)
        params = runtime.sampling(**body.sampling())
        generation = Generation(runtime.engine, "", prompt_ids, params, state.settings.request_timeout_sec)
        return generation, admit(record)

    def done(
        model: str,
        started: float,
        status: int,
        error: Exception | None,
        held: tuple[Generation, ModelVersion] | None,
        completion: int,
    ) -> None:
        generation, record = held if held is not None else (None, None)
        account(
            state,
            model=model,
            version="" if record is None else str(record.version),
            protocol=PROTOCOL,
            seconds=time.perf_counter() - started,
            status=status,
            error=error,
            generation=generation,
            completion=completion,
            record=record,
        )

    async def whole(model: str, version: str | None, body: GenerateRequest) -> Response:
        started, held, completion = time.perf_counter(), None, 0
        pieces: list[str] = []
        reason: str | None = None
        try:
            held = await start(model, version, body)
            async for output in held[0].outputs():
                pieces.append(output.text)
                completion += output.new_tokens
                reason = output.finish_reason
            if reason not in ("stop", "length"):
                raise failure(model, reason)
        except Exception as exc:
            response = error_response(exc)
            done(model, started, response.status_code, exc, held, completion)
            return response
        done(model, started, 200, None, held, completion)
        served = str(held[1].version)
        document = {"model_name": model, "model_version": served, "text_output": "".join(pieces)}
        return json_response(document | {"finish_reason": reason})

    async def streamed(model: str, version: str | None, body: GenerateRequest) -> Response:
        started = time.perf_counter()
        try:
            held = await start(model, version, body)
        except Exception as exc:
            response = error_response(exc)
            done(model, started, response.status_code, exc, None, 0)
            return response
        generation, served = held[0], str(held[1].version)

        async def events() -> AsyncGenerator[bytes]:
            error: Exception | None = ClientDisconnected("the caller hung up during the stream; generation stopped")
            completion = 0
            try:
                async for output in generation.outputs():
                    completion += output.new_tokens
                    if output.finish_reason in ("error", "abort"):
                        error = failure(model, output.finish_reason)
                        yield b"data: " + orjson.dumps({"error": error.message}) + b"\n\n"
                        break
                    event = {"model_name": model, "model_version": served, "text_output": output.text}
                    if output.finish_reason is not None:
                        event["finish_reason"] = output.finish_reason
                    yield b"data: " + orjson.dumps(event) + b"\n\n"
                else:
                    error = None
            except DeadlineExceeded as exc:  # the headers are gone: the stream ends with the reason
                error = exc
                yield b"data: " + orjson.dumps({"error": exc.message}) + b"\n\n"
            finally:
                status = 200 if error is None else error_response(error).status_code
                done(model, started, status, error, held, completion)

        def abandon() -> None:
            generation.cancel()
            done(model, started, 499, ClientDisconnected(GONE), held, 0)

        return GenerationStream(events(), abandon)

    errors = openapi.errors(400, 404, 413, 429, 503, 504, 507)
    sse: openapi.Responses = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}

    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        api.add_api_route(
            f"{prefix}/generate",
            _bind(whole, versioned="version" in prefix),
            methods=["POST"],
            summary="Generate text from a prompt (generate extension)",
            responses=errors,
        )
        api.add_api_route(
            f"{prefix}/generate_stream",
            _bind(streamed, versioned="version" in prefix),
            methods=["POST"],
            summary="Generate text from a prompt, streamed as server-sent events (generate extension)",
            responses={**sse, **errors},
        )
    return api


def _bind(handler: Any, *, versioned: bool) -> Any:
    """A route function with the path parameters FastAPI sees for its path."""
    if versioned:

        async def with_version(model: str, version: str, body: GenerateRequest) -> Response:
            return await handler(model, version, body)  # type: ignore[no-any-return]

        return with_version

    async def latest(model: str, body: GenerateRequest) -> Response:
        return await handler(model, None, body)  # type: ignore[no-any-return]

    return latest

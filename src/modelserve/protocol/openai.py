"""The OpenAI-compatible API: chat completions, completions (both streamed or not) and the model list.

The official ``openai`` SDK pointed at ``http://host:port/v1`` works unchanged. Generative models are
repository models like the others: the manager finds (or loads, on demand) them, the front door checks
their credentials (``infer``) and refuses them while draining. A streamed answer is server-sent events
of ``data: {chunk}`` ending with ``data: [DONE]``; when the caller hangs up, the iteration is cancelled
and the engine drops the sequence at its next step.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from fastapi import APIRouter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from modelserve.errors import ClientDisconnected, DeadlineExceeded, InvalidInput, ModelserveError
from modelserve.generative.stream import Generation
from modelserve.models.records import ModelVersion
from modelserve.protocol import openapi
from modelserve.protocol.errors import error_response, http_status, openai_error, validation_problems
from modelserve.protocol.generation import GONE, GenerationStream, account, admit, failure, generative_runtime
from modelserve.protocol.http import Endpoint, json_response, read_body
from modelserve.protocol.openai_schema import ChatCompletionRequest, CompletionRequest
from modelserve.repository.config import Platform
from modelserve.server.state import ServerState

PROTOCOL = "openai"


@dataclass
class _Call:
    """One request's bookkeeping, from its arrival to its last byte."""

    kind: str  # "chat.completion" or "text_completion"
    model: str
    started: float = field(default_factory=time.perf_counter)
    version: str = ""
    record: ModelVersion | None = None  # the version serving it, once its generation is admitted
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, choice: dict[str, Any], usage: dict[str, int] | None = None) -> bytes:
        document = {
            "id": self.response_id,
            "object": f"{self.kind}.chunk" if self.kind == "chat.completion" else self.kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice] if choice else [],
        }
        if usage is not None:
            document["usage"] = usage
        return b"data: " + orjson.dumps(document) + b"\n\n"

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.kind == "chat.completion" else "cmpl-") + self.id


class Routes(NamedTuple):
    """The /v1 OpenAI routes: registered with FastAPI (documentation, the model list), and the two
    completion routes as the front door calls them, past FastAPI's routing and middleware: a streamed
    answer's every event went through five of its layers, and the first token waited for them too."""

    api: APIRouter
    hot: dict[str, Endpoint]  # path -> handler that reads and validates its body itself


def routes(state: ServerState) -> Routes:
    """The /v1 OpenAI routes, bound to one server's state."""
    manager = state.manager
    api = APIRouter(tags=["OpenAI-compatible API (/v1)"])

    async def start(call: _Call, body: ChatCompletionRequest | CompletionRequest) -> Generation:
        runtime, record = await generative_runtime(manager, body.model)
        call.version = str(record.version)
        engine = runtime.engine
        if isinstance(body, ChatCompletionRequest):
            prompt_ids = await engine.tokenize_chat(body.conversation())
            max_tokens = body.max_completion_tokens or body.max_tokens
        else:
            prompt = body.prompt
            prompt_ids = prompt if isinstance(prompt, list) else await engine.tokenize(prompt)
            max_tokens = body.max_tokens
        params = runtime.sampling(**body.sampling(max_tokens))
        generation = Generation(engine, call.id, prompt_ids, params, state.settings.request_timeout_sec)
        call.record = admit(record)
        return generation

    def finish(
        call: _Call,
        body: ChatCompletionRequest | CompletionRequest,
        status: int,
        error: Exception | None,
        generation: Generation | None,
        completion: int,
    ) -> None:
        account(
            state,
            model=body.model,
            version=call.version,
            protocol=PROTOCOL,
            seconds=_since(call),
            status=status,
            error=error,
            generation=generation,
            completion=completion,
            user=body.user,
            record=call.record,
        )

    async def answer(call: _Call, body: ChatCompletionRequest | CompletionRequest) -> Response:
        generation: Generation | None = None
        pieces: list[str] = []
        reason: str | None = None
        completion = 0
        try:
            generation = await start(call, body)
            if body.stream:
                started = generation

                def abandon() -> None:
                    started.cancel()
                    finish(call, body, 499, ClientDisconnected(GONE), started, 0)

                return GenerationStream(stream(call, body, generation), abandon)
            async for output in generation.outputs():
                pieces.append(output.text)
                completion += output.new_tokens
                reason = output.finish_reason
            if reason not in ("stop", "length"):
                raise failure(body.model, reason)
        except Exception as exc:
            response = error_response(exc, openai=True)
            finish(call, body, response.status_code, exc, generation, completion)
            return response
        finish(call, body, 200, None, generation, completion)
        text = "".join(pieces)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        if call.kind == "chat.completion":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return json_response(
            {
                "id": call.response_id,
                "object": call.kind,
                "created": call.created,
                "model": body.model,
                "choices": [choice],
                "usage": _usage(generation.prompt_tokens, completion),
            }
        )

    async def stream(
        call: _Call, body: ChatCompletionRequest | CompletionRequest, generation: Generation
    ) -> AsyncGenerator[bytes]:
        chat = call.kind == "chat.completion"
        error: Exception | None = ClientDisconnected("the caller hung up during the stream; generation stopped")
        completion = 0
        try:
            if chat:
                yield call.chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
            try:
                async for output in generation.outputs():
                    completion += output.new_tokens
                    reason = output.finish_reason
                    if reason in ("error", "abort"):
                        error = failure(body.model, reason)
                        yield _error_event(error)
                        break
                    if not output.text and reason is None:
                        continue
                    piece = {"content": output.text} if output.text else {}
                    choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
                    choice |= {"delta": piece} if chat else {"text": output.text}
                    yield call.chunk(choice)
                else:
                    error = None
            except DeadlineExceeded as exc:  # the headers are gone: the stream ends with the reason
                error = exc
                yield _error_event(exc)
            if error is None and body.include_usage:
                yield call.chunk({}, _usage(generation.prompt_tokens, completion))
            yield b"data: [DONE]\n\n"
        finally:
            status = 200 if error is None else http_status(error)
            finish(call, body, status, error, generation, completion)

    errors = openapi.openai_errors(400, 404, 413, 429, 503, 504, 507)
    streamed: openapi.Responses = {
        200: {"content": {"application/json": {}, "text/event-stream": {"schema": {"type": "string"}}}}
    }

    @api.post(
        "/v1/chat/completions",
        summary="Generate the next message of a conversation (OpenAI-compatible; stream: true for SSE)",
        responses={**streamed, **errors},
    )
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        return await answer(_Call("chat.completion", body.model), body)

    @api.post(
        "/v1/completions",
        summary="Continue a prompt (OpenAI-compatible; stream: true for SSE)",
        responses={**streamed, **errors},
    )
    async def completions(body: CompletionRequest) -> Response:
        return await answer(_Call("text_completion", body.model), body)

    def direct(kind: str, schema: type[ChatCompletionRequest | CompletionRequest]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                body = schema.model_validate_json(await read_body(request, state.settings.max_input_bytes))
            except ValidationError as exc:
                return error_response(InvalidInput(validation_problems(exc.errors())), openai=True)
            except ModelserveError as exc:  # too large, or the caller hung up
                return error_response(exc, openai=True)
            return await answer(_Call(kind, body.model), body)

        return endpoint

    hot = {
        "/v1/chat/completions": direct("chat.completion", ChatCompletionRequest),
        "/v1/completions": direct("text_completion", CompletionRequest),
    }

    @api.get("/v1/models", summary="The generative models served (OpenAI's model list)")
    async def models() -> Response:
        started = int(time.time() - (time.monotonic() - state.started_at))
        listed = [
            {"id": record.name, "object": "model", "created": started, "owned_by": "modelserve"}
            for record in manager.ready()
            if record.spec is not None and record.spec.platform is Platform.LLM
        ]
        unique = list({entry["id"]: entry for entry in listed}.values())
        return json_response({"object": "list", "data": unique})

    return Routes(api, hot)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _since(call: _Call) -> float:
    return time.perf_counter() - call.started


def _error_event(error: ModelserveError) -> bytes:
    """A stream's last event when it fails after its head was sent: the error object OpenAI's API sends."""
    return b"data: " + orjson.dumps({"error": openai_error(error.message, http_status(error))}) + b"\n\n"

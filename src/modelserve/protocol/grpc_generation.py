"""Generative models over gRPC, answered as Triton's vLLM backend answers them: a BYTES ``text_input`` in,
a BYTES ``text_output`` out.

Its optional inputs are read as that backend reads them: ``stream`` (BOOL; here a request parameter
too), ``sampling_parameters`` (a JSON object as BYTES, else the request's own parameters, with the names
and ranges of the generate extension; values may be strings, as Triton's samples send them),
``exclude_input_in_output`` and ``return_finish_reason``, ``return_num_input_tokens``,
``return_num_output_tokens``. One difference: ``text_output`` is the generated text alone unless
``exclude_input_in_output`` is false, as every V2 answer of this server is, where that backend puts the
prompt first by default.

ModelInfer answers once, with the whole text. On ModelStreamInfer a request with ``stream`` is decoupled:
one response per new piece of text as the engine makes it, the last with ``finish_reason``; every
response on a stream carries ``triton_final_response``, true on a request's last, as Triton sets it.
Generations run on the engine from the event loop, never on an inference thread: a call cancelled or
past its deadline is a cancelled task, which cancels its generation, dropped at the engine's next step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import orjson
from pydantic import ValidationError
from tritonclient.grpc import service_pb2

from modelserve.errors import ClientDisconnected, DeadlineExceeded, InvalidInput
from modelserve.generative.runtime import TEXT_INPUT, TEXT_OUTPUT, GenerativeRuntime
from modelserve.generative.stream import Generation
from modelserve.models.records import ModelVersion
from modelserve.protocol.errors import grpc_status
from modelserve.protocol.generate import GenerateRequest
from modelserve.protocol.generation import account, admit, failure
from modelserve.protocol.grpc_codec import decode_infer_request, encode_infer_response, output_placements
from modelserve.protocol.shared_memory import SharedMemoryRegistry
from modelserve.server.state import ServerState
from modelserve.types import InferenceResponse

PROTOCOL = "grpc"
FINAL = "triton_final_response"
_FLAGS = (
    "stream",
    "exclude_input_in_output",
    "return_finish_reason",
    "return_num_input_tokens",
    "return_num_output_tokens",
)
_UNSUPPORTED = ("return_logprobs", "return_cumulative_logprob")  # the engine keeps no log probabilities
INPUTS = (TEXT_INPUT, "sampling_parameters", *_FLAGS, *_UNSUPPORTED)
OUTPUTS = (TEXT_OUTPUT, "finish_reason", "num_input_tokens", "num_output_tokens")
Send = Callable[[service_pb2.ModelStreamInferResponse, bool], None]  # a response, and whether it is the last


@dataclass(frozen=True, slots=True)
class Asked:
    """What one request asks for, read from its inputs and parameters."""

    prompt: str
    sampling: dict[str, Any]
    stream: bool
    prepend: bool  # the prompt before the generated text: exclude_input_in_output false
    outputs: frozenset[str]  # what each response carries


def read(message: service_pb2.ModelInferRequest, shared_memory: SharedMemoryRegistry | None) -> Asked:
    """A request's prompt, sampling and options; InvalidInput naming what is wrong."""
    request = decode_infer_request(message, shared_memory)
    inputs = request.inputs
    if unknown := sorted(set(inputs) - set(INPUTS)):
        raise InvalidInput(f"input '{unknown[0]}' is not one a generative model takes: {', '.join(INPUTS)}")
    if TEXT_INPUT not in inputs:
        raise InvalidInput(f"a generation needs the BYTES input '{TEXT_INPUT}', its prompt")
    flags = {name: _flag(inputs, name) for name in (*_FLAGS, *_UNSUPPORTED)}
    if asked := [name for name in _UNSUPPORTED if flags[name]]:
        raise InvalidInput(f"{asked[0]} is not supported by this server's engine")
    parameters = request.parameters or {}
    stream = flags["stream"]
    if stream is None:
        stream = _boolean(parameters.get("stream", False), "stream")
    prepend = flags["exclude_input_in_output"] is False
    if prepend and stream:
        raise InvalidInput("exclude_input_in_output false is not allowed when streaming: each response is new text")
    if "sampling_parameters" in inputs:
        parameters = _json_object(_text(inputs["sampling_parameters"], "sampling_parameters"))
    prompt = _text(inputs[TEXT_INPUT], TEXT_INPUT)
    try:
        sampling = GenerateRequest.model_validate({"text_input": prompt, "parameters": parameters}).sampling()
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = next((str(p) for p in reversed(problem["loc"]) if isinstance(p, str)), "sampling_parameters")
        raise InvalidInput(f"{where}: {problem['msg']}") from None
    enabled = {TEXT_OUTPUT} | {name for name in OUTPUTS[1:] if flags[f"return_{name}"]}
    if request.outputs is not None:
        if unknown := sorted(set(request.outputs) - set(OUTPUTS)):
            raise InvalidInput(f"output '{unknown[0]}' is not one a generative model answers: {', '.join(OUTPUTS)}")
        enabled &= set(request.outputs)
    return Asked(prompt, sampling, stream, prepend, frozenset(enabled))


class GrpcGenerations:
    """Requests for generative models over gRPC, on one server's state; each accounted for as the HTTP
    routes account for theirs (metrics, access line, its model's requests inside)."""

    def __init__(self, state: ServerState, shared_memory: SharedMemoryRegistry | None) -> None:
        self.state = state
        self.shared_memory = shared_memory

    async def answer(
        self,
        message: service_pb2.ModelInferRequest,
        record: ModelVersion,
        started: float,
        context: grpc.aio.ServicerContext,
        send: Send | None = None,
    ) -> service_pb2.ModelInferResponse | None:
        """The whole text as one response; or, on a stream (``send``) for a request with ``stream``, None
        once every piece has gone through ``send``. Cancelling the call's task stops the generation."""
        call = _Call(message.model_name, str(record.version), started)
        try:
            asked = read(message, self.shared_memory)
            if asked.stream and send is None:
                raise InvalidInput("stream true needs ModelStreamInfer, which answers piece by piece; ModelInfer once")
            placements = output_placements(message, self.shared_memory)
            if placements and asked.stream:
                raise InvalidInput("a streamed generation answers in its responses; ask for no shared-memory output")
            call.generation = await self._start(asked, record, message.id)
            call.record = admit(record)
            if asked.stream:
                assert send is not None
                await self._stream(call, message, asked, send)
                reply = None
            else:
                reply = await self._whole(call, message, asked, placements)
                if send is not None:  # a stream's every response says whether it is its request's last
                    reply.parameters[FINAL].bool_param = True
        except asyncio.CancelledError:
            code, error = _gone(context)
            self._finish(call, code, error)
            raise
        except Exception as exc:
            self._finish(call, grpc_status(exc).name, exc)
            raise
        self._finish(call, "OK", None)
        return reply

    async def _start(self, asked: Asked, record: ModelVersion, request_id: str) -> Generation:
        runtime = record.runtime
        assert isinstance(runtime, GenerativeRuntime)
        prompt_ids = await runtime.engine.tokenize(asked.prompt)
        params = runtime.sampling(**asked.sampling)
        return Generation(runtime.engine, request_id, prompt_ids, params, self.state.settings.request_timeout_sec)

    async def _whole(
        self, call: _Call, message: service_pb2.ModelInferRequest, asked: Asked, placements: dict[str, Any]
    ) -> service_pb2.ModelInferResponse:
        assert call.generation is not None
        pieces = [asked.prompt] if asked.prepend else []
        reason = None
        async for output in call.generation.outputs():
            pieces.append(output.text)
            call.completion += output.new_tokens
            reason = output.finish_reason
        if reason not in ("stop", "length"):
            raise failure(call.model, reason)
        outputs = _outputs(asked, "".join(pieces), reason, call.generation.prompt_tokens, call.completion)
        response = InferenceResponse(call.model, int(call.version), outputs, message.id or None)
        return encode_infer_response(response, placements, self.shared_memory)

    async def _stream(self, call: _Call, message: service_pb2.ModelInferRequest, asked: Asked, send: Send) -> None:
        generation = call.generation
        assert generation is not None
        unsent = 0  # tokens made since the last response: a piece held back (a stop string's start) waits
        async for output in generation.outputs():
            call.completion += output.new_tokens
            unsent += output.new_tokens
            if output.finish_reason in ("error", "abort"):
                raise failure(call.model, output.finish_reason)
            last = output.finish_reason is not None
            if not output.text and not last:
                continue
            outputs = _outputs(asked, output.text, output.finish_reason, generation.prompt_tokens, unsent)
            response = encode_infer_response(
                InferenceResponse(call.model, int(call.version), outputs, message.id or None)
            )
            response.parameters[FINAL].bool_param = last
            send(service_pb2.ModelStreamInferResponse(infer_response=response), last)
            unsent = 0

    def _finish(self, call: _Call, code: str, error: Exception | None) -> None:
        account(
            self.state,
            model=call.model,
            version=call.version,
            protocol=PROTOCOL,
            seconds=time.perf_counter() - call.started,
            status=code,
            error=error,
            generation=call.generation,
            completion=call.completion,
            record=call.record,
        )


@dataclass
class _Call:
    """One request's bookkeeping, from its arrival to its last response."""

    model: str
    version: str
    started: float
    generation: Generation | None = None
    record: ModelVersion | None = None  # the version serving it, once its generation is admitted
    completion: int = 0  # tokens generated


def _outputs(
    asked: Asked, text: str, reason: str | None, prompt_tokens: int, new_tokens: int
) -> dict[str, np.ndarray[Any, Any]]:
    """A response's tensors: its text, and what the request enabled (``finish_reason`` reads "None" until
    the last response, and ``num_output_tokens`` counts the tokens since the previous one, as Triton's vLLM
    backend sends them)."""
    wanted = asked.outputs
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    if TEXT_OUTPUT in wanted:
        outputs[TEXT_OUTPUT] = np.array([text.encode()], dtype=np.object_)
    if "finish_reason" in wanted:
        outputs["finish_reason"] = np.array([str(reason).encode()], dtype=np.object_)
    if "num_input_tokens" in wanted:
        outputs["num_input_tokens"] = np.array([prompt_tokens], dtype=np.uint32)
    if "num_output_tokens" in wanted:
        outputs["num_output_tokens"] = np.array([new_tokens], dtype=np.uint32)
    return outputs


def _gone(context: grpc.aio.ServicerContext) -> tuple[str, Exception]:
    """Why a generation's task was cancelled: its call's (or stream's) deadline passed, or the caller
    cancelled; gRPC cancels the task either way."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return "DEADLINE_EXCEEDED", DeadlineExceeded("the caller's deadline passed during the generation; it stopped")
    return "CANCELLED", ClientDisconnected("the caller cancelled the call during the generation; it stopped")


def _flag(inputs: dict[str, np.ndarray[Any, Any]], name: str) -> bool | None:
    """A BOOL [1] input's value, None where the request left it out."""
    if (array := inputs.get(name)) is None:
        return None
    if array.dtype != np.bool_ or array.size != 1:
        raise InvalidInput(f"input '{name}' must be BOOL with one element, not {array.dtype} of {array.size}")
    return bool(array.reshape(-1)[0])


def _boolean(value: object, name: str) -> bool:
    """A request parameter read as a boolean: a bool, or the text true or false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidInput(f"parameter '{name}' must be true or false, not {value!r}")


def _text(array: np.ndarray[Any, Any], name: str) -> str:
    """A BYTES [1] input as text."""
    values = array.reshape(-1)
    if values.size != 1:
        raise InvalidInput(f"input '{name}' must hold one element, not {values.size}")
    value = values[0]
    try:
        return value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{name}' is not UTF-8 text") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidInput("input 'sampling_parameters' is not JSON; send a JSON object of parameters") from None
    if not isinstance(document, dict):
        raise InvalidInput("input 'sampling_parameters' must be a JSON object of sampling parameters")
    return document

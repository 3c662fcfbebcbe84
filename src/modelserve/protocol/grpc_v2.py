"""The Open Inference Protocol over gRPC: Triton's ``inference.GRPCInferenceService``, served by
grpc.aio on the same event loop and ModelManager as HTTP.

Every answer other than inference is built from the same documents as the HTTP side (metadata,
Triton-style model config, statistics, repository index) and parsed into the protobuf messages, so
the two protocols cannot drift apart. Errors map to codes through ``protocol/errors.py``. Inference
on a generative model goes to its engine through ``protocol/grpc_generation.py``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import ParseDict
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from modelserve import __version__
from modelserve.errors import ModelNotReady, ModelserveError, ShuttingDown
from modelserve.observability.tracing import begin_request, current_trace_id
from modelserve.protocol.errors import abort, grpc_status
from modelserve.protocol.grpc_codec import (
    decode_infer_request,
    encode_infer_response,
    output_placements,
    parameters_of,
)
from modelserve.protocol.grpc_generation import FINAL, GrpcGenerations, Send
from modelserve.protocol.shared_memory import SharedMemory
from modelserve.protocol.v2_codec import parse_version
from modelserve.protocol.v2_documents import (
    EXTENSIONS,
    model_config,
    model_metadata,
    model_statistics,
    repository_entry,
)
from modelserve.repository.config import Platform
from modelserve.repository.overrides import from_parameters
from modelserve.server.state import ServerState

log = logging.getLogger("modelserve.grpc")
_SERVICE = "inference.GRPCInferenceService"
_ATTRIBUTES = {"rpc.system": "grpc", "rpc.service": _SERVICE, "modelserve.protocol": "grpc"}
Reply = TypeVar("Reply")
_PROBES = {"ServerLive", "ServerReady", "ModelReady"}  # still answered while draining
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]
# A response on a stream, and whether it is its request's last.
Answer = tuple[service_pb2.ModelStreamInferResponse, bool]


def _rpc(method: Handler[Reply]) -> Handler[Reply]:
    """Answer a typed error with its code and message, and a server bug with INTERNAL (logged)."""

    @functools.wraps(method)
    async def guarded(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        # The call's trace id, for its log lines and its error.
        begin_request(metadata_value(context.invocation_metadata(), "traceparent"))
        try:
            if self.state.draining and method.__name__ not in _PROBES:
                raise ShuttingDown("server is shutting down; retry the request on another replica")
            return await method(self, request, context)
        except ModelserveError as exc:
            await abort(context, grpc_status(exc), exc.message)
        except Exception as exc:
            log.exception("unhandled error in %s", method.__name__)
            await abort(context, grpc.StatusCode.INTERNAL, f"internal server error ({type(exc).__name__})")

    return guarded


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Every RPC of GRPCInferenceService over one server's state."""

    def __init__(self, state: ServerState, shared_memory: SharedMemory) -> None:
        self.state = state
        self.manager = state.manager
        self.tracing = state.tracing
        self.shared_memory = shared_memory.system
        self.cuda = shared_memory.cuda
        self.generations = GrpcGenerations(state, shared_memory.system)

    @_rpc
    async def ServerLive(self, request: Any, context: Any) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=self.state.not_live() is None)

    @_rpc
    async def ServerReady(self, request: Any, context: Any) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.state.not_ready() is None)

    @_rpc
    async def ModelReady(self, request: Any, context: Any) -> service_pb2.ModelReadyResponse:
        try:
            await self.manager.find(request.name, parse_version(request.version))
        except ModelNotReady:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(self, request: Any, context: Any) -> service_pb2.ServerMetadataResponse:
        return service_pb2.ServerMetadataResponse(name="modelserve", version=__version__, extensions=EXTENSIONS)

    @_rpc
    async def ModelMetadata(self, request: Any, context: Any) -> service_pb2.ModelMetadataResponse:
        record = await self.manager.obtain(request.name, parse_version(request.version))
        document = model_metadata(request.name, await self.manager.versions(request.name), record)
        return ParseDict(document, service_pb2.ModelMetadataResponse())

    @_rpc
    async def ModelConfig(self, request: Any, context: Any) -> service_pb2.ModelConfigResponse:
        record = await self.manager.obtain(request.name, parse_version(request.version))
        return service_pb2.ModelConfigResponse(config=ParseDict(model_config(record), model_config_pb2.ModelConfig()))

    @_rpc
    async def ModelStatistics(self, request: Any, context: Any) -> service_pb2.ModelStatisticsResponse:
        if request.name:
            records = await self.manager.serving(request.name, parse_version(request.version))
        else:
            records = self.manager.ready()
        return ParseDict(model_statistics(records), service_pb2.ModelStatisticsResponse())

    @_rpc
    async def RepositoryIndex(self, request: Any, context: Any) -> service_pb2.RepositoryIndexResponse:
        entries = [e for e in await self.manager.index() if not request.ready or e.state.value == "READY"]
        return ParseDict({"models": [repository_entry(e) for e in entries]}, service_pb2.RepositoryIndexResponse())

    @_rpc
    async def RepositoryModelLoad(self, request: Any, context: Any) -> service_pb2.RepositoryModelLoadResponse:
        config, files = from_parameters(request.model_name, parameters_of(request), base64_files=False)
        await self.manager.load(request.model_name, config, files)
        return service_pb2.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request: Any, context: Any) -> service_pb2.RepositoryModelUnloadResponse:
        await self.manager.unload(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    @_rpc
    async def ModelInfer(self, request: Any, context: Any) -> service_pb2.ModelInferResponse:
        if not self.tracing.enabled:
            return await self._infer(request, context, alone=True)
        with self.tracing.request(f"{_SERVICE}/ModelInfer", _metadata(context), _ATTRIBUTES):
            return await self._infer(request, context, alone=True)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        """Requests on one stream run concurrently. A request answered once is answered in the order the
        requests came (each answer, or error, carries its request's id), as Triton answers a stream to a
        model that is not decoupled; a generation asked to ``stream`` is decoupled, as Triton's vLLM backend
        is: its pieces go out as they are made, between the other requests' answers.

        At most GRPC_STREAM_MAX_INFLIGHT requests are inside the server at once, from being read until
        gRPC has taken their last answer to send; at the bound the stream is not read further. A client that
        never reads its answers then fills gRPC's flow-control windows, and its sends wait, instead of
        the server holding every request and answer it was sent. A stream that ends early (cancelled by
        its client, past its deadline) cancels every request still inside, generations included.
        """
        stream = _Stream(self.state.settings.grpc_stream_max_inflight)
        reader = asyncio.create_task(self._read_stream(requests, stream, context))
        answers, room = stream.answers, stream.room
        reading, streaming = True, 0  # streaming: requests whose first answer went out and last has not
        try:
            while reading or streaming:
                item = await answers.get()
                if item is None:  # the client sends no more requests
                    reading = False
                    continue
                if isinstance(item, asyncio.Future):  # a request's first answer, in request order
                    answer, last = await item
                    streaming += not last
                else:  # a streamed generation's later answer
                    answer, last = item
                    streaming -= last
                yield answer
                if last:
                    room.release()
            await reader  # a stream that failed to read ends with its error
        finally:
            reader.cancel()
            stream.cancel()

    async def _read_stream(
        self, requests: AsyncIterator[Any], stream: _Stream, context: grpc.aio.ServicerContext
    ) -> None:
        """Start each request of a stream once it has room."""
        carrier = _metadata(context)  # its traceparent gives every request of the stream its trace id
        try:
            while True:
                await stream.room.acquire()
                try:
                    message = await anext(requests)
                except StopAsyncIteration:
                    return
                stream.start(functools.partial(self._stream_answer, message, context, carrier))
        finally:
            stream.end()

    async def _stream_answer(
        self, message: Any, context: grpc.aio.ServicerContext, carrier: dict[str, Any] | None, send: Send
    ) -> None:
        begin_request(carrier.get("traceparent") if carrier else None)
        try:
            with self.tracing.request(f"{_SERVICE}/ModelStreamInfer", carrier, _ATTRIBUTES):
                reply = await self._infer(message, context, send=send)
            if reply is not None:  # None: a streamed generation, which sent its answers itself
                send(service_pb2.ModelStreamInferResponse(infer_response=reply), True)
            return
        except ModelserveError as exc:
            error = _stream_error(message, exc.message)
        except Exception as exc:
            log.exception("unhandled error in ModelStreamInfer")
            error = _stream_error(message, f"internal server error ({type(exc).__name__})")
        send(error, True)

    async def _infer(
        self, message: Any, context: grpc.aio.ServicerContext, *, alone: bool = False, send: Send | None = None
    ) -> service_pb2.ModelInferResponse | None:
        """One inference; ``alone`` for unary calls, which grpc.aio hands over one at a time
        (``Batcher.enqueue``), not for a stream's messages, which arrive together and batch. A generative
        model's request goes to the engine instead, accounted for there; on a stream (``send``) it may be
        answered piece by piece, and then None is returned."""
        started = time.perf_counter()
        label = message.model_name
        generative = False
        self.state.grpc_in_flight += 1  # a drain waits for it, also while its model loads on demand
        try:
            if self.state.draining:  # a stream opened before SIGTERM takes no new requests either
                raise ShuttingDown("server is shutting down; retry the request on another replica")
            with self.tracing.span("admission"):  # the model found before anything is decoded
                record = await self.manager.obtain(label, parse_version(message.model_version))
                generative = record.spec is not None and record.spec.platform is Platform.LLM
                if not generative:
                    shared_memory = self.shared_memory
                    request = decode_infer_request(message, shared_memory)
                    placements = output_placements(message, shared_memory)
            if generative:
                return await self.generations.answer(message, record, started, context, send)
            result = await self.manager.infer(request, context.time_remaining() if alone else None, alone=alone)
            with self.tracing.span("encode"):
                reply = encode_infer_response(result, placements, shared_memory)
        except Exception as exc:
            if not generative:  # a generation has accounted for itself
                self.state.finish_request(label, "", "grpc", grpc_status(exc).name, time.perf_counter() - started, exc)
            raise
        finally:
            self.state.grpc_in_flight -= 1
        self.state.finish_request(label, str(result.version), "grpc", "OK", time.perf_counter() - started)
        return reply

    @_rpc
    async def SystemSharedMemoryStatus(
        self, request: Any, context: Any
    ) -> service_pb2.SystemSharedMemoryStatusResponse:
        regions = {r["name"]: r for r in self.shared_memory.status(request.name)}
        return ParseDict({"regions": regions}, service_pb2.SystemSharedMemoryStatusResponse())

    @_rpc
    async def SystemSharedMemoryRegister(
        self, request: Any, context: Any
    ) -> service_pb2.SystemSharedMemoryRegisterResponse:
        self.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
        return service_pb2.SystemSharedMemoryRegisterResponse()

    @_rpc
    async def SystemSharedMemoryUnregister(
        self, request: Any, context: Any
    ) -> service_pb2.SystemSharedMemoryUnregisterResponse:
        self.shared_memory.unregister(request.name)
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    @_rpc
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> service_pb2.CudaSharedMemoryStatusResponse:
        regions = {r["name"]: r for r in self.cuda.status(request.name)}
        return ParseDict({"regions": regions}, service_pb2.CudaSharedMemoryStatusResponse())

    @_rpc
    async def CudaSharedMemoryRegister(
        self, request: Any, context: Any
    ) -> service_pb2.CudaSharedMemoryRegisterResponse:
        self.cuda.register(request.name)

    @_rpc
    async def CudaSharedMemoryUnregister(
        self, request: Any, context: Any
    ) -> service_pb2.CudaSharedMemoryUnregisterResponse:
        self.cuda.unregister(request.name)
        return service_pb2.CudaSharedMemoryUnregisterResponse()

    async def TraceSetting(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _unsupported(context, "trace settings")

    async def LogSettings(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _unsupported(context, "log settings")


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """The call's metadata as a mapping, where the W3C propagator looks for ``traceparent``."""
    return dict(context.invocation_metadata() or ())


def metadata_value(metadata: Any, name: str) -> str | None:
    """The first text value of the call metadata ``name``, or None: the gRPC twin of an HTTP header."""
    for key, value in metadata or ():
        if key == name:
            return value if isinstance(value, str) else None
    return None


def _stream_error(message: Any, text: str) -> service_pb2.ModelStreamInferResponse:
    # The failed request's id and model go back with the error so the client can tell which failed, and
    # its trace id (a stream's error is no call's end, so it has no trailing metadata) to find its log lines.
    echo = service_pb2.ModelInferResponse(model_name=message.model_name, id=message.id)
    if (trace_id := current_trace_id()) is not None:
        echo.parameters["trace_id"].string_param = trace_id
    echo.parameters[FINAL].bool_param = True  # an error is its request's last answer
    return service_pb2.ModelStreamInferResponse(error_message=text, infer_response=echo)


class _Stream:
    """What one ModelStreamInfer stream owes its client, in ``answers``: each request gets a slot for its
    first answer, queued in the order the requests came; its later answers (a streamed generation's
    pieces) queue as they come, after that slot; None once the client sends no more requests. The stream
    ends once that None and every request's last answer have gone by."""

    def __init__(self, limit: int) -> None:
        self.room = asyncio.Semaphore(limit)  # requests inside, released with each one's last answer
        self.answers: asyncio.Queue[asyncio.Future[Answer] | Answer | None] = asyncio.Queue()
        self._unanswered: set[asyncio.Task[None]] = set()  # requests whose last answer is still to come

    def start(self, answering: Callable[[Send], Coroutine[Any, Any, None]]) -> None:
        """Answer one request in a task of its own, which sends its answers through the ``Send`` it is given."""
        slot: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.answers.put_nowait(slot)

        def send(response: service_pb2.ModelStreamInferResponse, last: bool) -> None:
            if slot.done():
                self.answers.put_nowait((response, last))
            else:
                slot.set_result((response, last))
            if last:
                self._unanswered.discard(task)

        task = asyncio.create_task(answering(send))
        self._unanswered.add(task)

    def end(self) -> None:
        """The client sends no more requests."""
        self.answers.put_nowait(None)

    def cancel(self) -> None:
        """Cancel every request still to be answered: a generation stops at the engine's next step."""
        for task in list(self._unanswered):
            task.cancel()


async def _unsupported(context: grpc.aio.ServicerContext, what: str) -> None:
    await abort(context, grpc.StatusCode.UNIMPLEMENTED, f"{what} is not supported on this server")

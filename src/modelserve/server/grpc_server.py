"""The gRPC server: grpc.aio on the running event loop, beside uvicorn, over the same ServerState."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message_factory import GetMessageClass
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelserve.errors import Forbidden, Unauthenticated
from modelserve.observability.tracing import begin_request
from modelserve.protocol.errors import abort, grpc_status
from modelserve.protocol.grpc_v2 import InferenceService, metadata_value
from modelserve.protocol.shared_memory import SharedMemory
from modelserve.server.auth import Guard
from modelserve.server.state import ServerState

log = logging.getLogger("modelserve.grpc")
_SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
_INFERENCE = frozenset(f"/{_SERVICE.full_name}/{name}" for name in ("ModelInfer", "ModelStreamInfer"))
# grpc.aio keeps one call request open per registered method and waits on all of them again after every
# call it accepts: asyncio.wait over 21 futures took 17.5 µs of CPU a call, over 3 7.6 µs. Only inference is
# registered; the other RPCs, called now and then, share the one request of the generic handler.
REGISTERED = ("ModelInfer", "ModelStreamInfer")
_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


async def start_grpc(
    state: ServerState, shared_memory: SharedMemory, guard: Guard | None = None
) -> grpc.aio.Server | None:
    """Listen for gRPC on GRPC_PORT (none when it is 0), with the server's size limit, keepalive, and
    the credentials check when authentication is on."""
    settings = state.settings
    if not settings.grpc_port:
        return None
    server = grpc.aio.server(
        # No interceptor at all while authentication is off: each one costs every call.
        interceptors=[Authentication(guard, state)] if guard is not None else None,
        options=[
            ("grpc.max_receive_message_length", settings.max_input_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", settings.grpc_keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", settings.grpc_keepalive_timeout_ms),
            # Worker processes share the port; a single process must fail loudly if it is taken.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
    )
    handlers = method_handlers(InferenceService(state, shared_memory))
    server.add_registered_method_handlers(_SERVICE.full_name, {name: handlers.pop(name) for name in REGISTERED})
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),))
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen for gRPC on {address} (in use? set --grpc-port or GRPC_PORT)") from exc
    await server.start()
    log.info("gRPC listening on %s", address)
    return server


def method_handlers(servicer: service_pb2_grpc.GRPCInferenceServiceServicer) -> dict[str, grpc.RpcMethodHandler]:
    """A handler for every RPC of GRPCInferenceService: the servicer's method with its messages' parser and
    serialiser, the handlers NVIDIA's generated code builds. That code also registers every one of them,
    which each call pays for (``REGISTERED``), so they are built here, from the service's descriptor."""
    handlers = {}
    for method in _SERVICE.methods:
        request, reply = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        handlers[method.name] = _KINDS[method.client_streaming, method.server_streaming](
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=reply.SerializeToString,
        )
    return handlers


class Authentication(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks each call's ``authorization`` metadata before its handler runs. A refused call aborts with
    UNAUTHENTICATED or PERMISSION_DENIED and the message HTTP would answer, and is counted as HTTP's is."""

    def __init__(self, guard: Guard, state: ServerState) -> None:
        self._guard = guard
        self._state = state
        # Decided once per method of the service; only a method it does not have is decided per call.
        self._scopes = {f"/{_SERVICE.full_name}/{m.name}": guard.grpc_scope(m.name) for m in _SERVICE.methods}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        started = time.perf_counter()
        method: str = details.method
        needed = self._scopes[method] if method in self._scopes else self._guard.grpc_scope(method)
        if needed is None:
            return await continuation(details)
        try:
            self._guard.check(metadata_value(details.invocation_metadata, "authorization"), needed)
        except (Unauthenticated, Forbidden) as exc:
            # The handler that would give the call its trace id never runs: the refusal's line and error need one.
            begin_request(metadata_value(details.invocation_metadata, "traceparent"))
            return self._refusal(method, exc, await continuation(details), started)
        return await continuation(details)

    def _refusal(
        self, method: str, error: Unauthenticated | Forbidden, handler: grpc.RpcMethodHandler | None, started: float
    ) -> grpc.RpcMethodHandler:
        code = grpc_status(error)
        if method in _INFERENCE:
            self._state.finish_request("unknown", "", "grpc", code.name, time.perf_counter() - started, error)
        else:
            self._state.metrics.observe_refusal(error)

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await abort(context, code, error.message)

        # The refusal takes the call's shape; its message is never deserialised.
        if handler is not None and handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        if handler is not None and handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse)
        if handler is not None and handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)

"""The gRPC server: grpc.aio on the running event loop, beside uvicorn, over the same ServerState."""

from __future__ import annotations

import logging

import grpc
from tritonclient.grpc import service_pb2_grpc

from modelserve.protocol.grpc_v2 import InferenceService
from modelserve.server.state import ServerState

log = logging.getLogger("modelserve.grpc")


async def start_grpc(state: ServerState) -> grpc.aio.Server | None:
    """Listen for gRPC on GRPC_PORT (none when it is 0), with the server's size limit and keepalive."""
    settings = state.settings
    if not settings.grpc_port:
        return None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_input_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", settings.grpc_keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", settings.grpc_keepalive_timeout_ms),
            # Worker processes share the port; a single process must fail loudly if it is taken.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen for gRPC on {address} (in use? set --grpc-port or GRPC_PORT)") from exc
    await server.start()
    log.info("gRPC listening on %s", address)
    return server

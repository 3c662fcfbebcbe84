"""The gRPC server's methods: every RPC of GRPCInferenceService is answered through the handlers NVIDIA's
generated code would build, and only inference is registered with grpc.aio, whose accept loop waits on
every registered method's call request again after each call it takes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelserve.server.grpc_server import REGISTERED, method_handlers
from tests.builders import copy_model
from tests.e2e.server import free_port
from tests.protocol.serving import serving

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


class GeneratedRegistration:
    """What NVIDIA's ``add_GRPCInferenceServiceServicer_to_server`` hands the server it is given."""

    def __init__(self, servicer: service_pb2_grpc.GRPCInferenceServiceServicer) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self)

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        pass  # the same handlers again, for servers without registered methods

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers = handlers


@pytest.fixture(scope="module")
def address(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("grpc_server") / "model_repository"
    copy_model(built_repository, "simple", root)
    port = free_port()
    with serving(root, grpc_port=port):
        yield f"127.0.0.1:{port}"


def simple_request() -> bytes:
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.arange(16, dtype=np.int32).tobytes())
    return bytes(request.SerializeToString())


def test_the_handlers_are_those_nvidias_generated_code_builds() -> None:
    servicer = service_pb2_grpc.GRPCInferenceServiceServicer()
    assert method_handlers(servicer) == GeneratedRegistration(servicer).handlers


def test_every_rpc_is_answered_and_a_method_the_service_lacks_is_unimplemented(address: str) -> None:
    answers = {}
    with grpc.insecure_channel(address) as channel:
        for method in SERVICE.methods:
            path = f"/{SERVICE.full_name}/{method.name}"
            if method.client_streaming:
                assert list(channel.stream_stream(path)(iter(()), timeout=10)) == []
                continue
            # An empty request: most RPCs refuse it, each in its own words, but none is missing.
            error = channel.unary_unary(path).future(b"", timeout=10).exception()
            answers[method.name] = error.details() if isinstance(error, grpc.RpcError) else "answered"
        assert "Method not found!" not in answers.values(), answers
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(f"/{SERVICE.full_name}/ModelExplain")(b"", timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_accepting_a_call_waits_on_the_call_requests_of_inference_and_the_generic_handler_only(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every RPC registered, grpc.aio waited on 21 call requests after each call it accepted: 17.5 µs
    of CPU a call, against 7.6 µs for 3 (docs/PERFORMANCE.md, gRPC)."""
    waited: list[int] = []
    wait = asyncio.wait

    async def counted(futures: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        futures = set(futures)
        waited.append(len(futures))
        return await wait(futures, *args, **kwargs)

    monkeypatch.setattr(asyncio, "wait", counted)
    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(5):  # the first is accepted by a wait that began before the count did
            infer(simple_request(), timeout=10)
    assert waited, "grpc.aio no longer accepts calls through asyncio.wait: measure what registering costs again"
    assert max(waited) == len(REGISTERED) + 1

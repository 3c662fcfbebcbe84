"""ModelStreamInfer over a real gRPC port: answers in request order, and at most GRPC_STREAM_MAX_INFLIGHT
requests of one stream inside the server, however many the client sends without reading its answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.builders import add_sub_onnx, batched_copy_of_simple, copy_model, write_config
from tests.e2e.server import free_port
from tests.protocol.serving import TestClient, metric_value, metrics_of, serving, wait_until

BOUND = 4  # GRPC_STREAM_MAX_INFLIGHT of the server under test
HOLD_MS = 5000  # `held` keeps a lone request this long, waiting for a batch to fill
WIDTH = 32768  # `wide`: two INT32 inputs and outputs of this many values, 256 KiB a request and an answer


@pytest.fixture(scope="module")
def repository(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream") / "model_repository"
    copy_model(built_repository, "simple", root)
    batched_copy_of_simple(root, "held", f"  max_queue_delay_ms: {HOLD_MS}\n")
    add_sub_onnx(root / "wide" / "1" / "model.onnx", dims=("batch", WIDTH))
    inputs, outputs = (
        "".join(f"  - {{name: {name}, datatype: INT32, dims: [{WIDTH}]}}\n" for name in names)
        for names in (("INPUT0", "INPUT1"), ("OUTPUT0", "OUTPUT1"))
    )
    write_config(root / "wide", f"platform: onnx\nmax_batch_size: 8\ninputs:\n{inputs}outputs:\n{outputs}")
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[tuple[TestClient, str]]:
    """The app with its gRPC port, each stream bounded to BOUND requests inside the server."""
    port = free_port()
    with serving(repository, grpc_port=port, grpc_stream_max_inflight=BOUND) as client:
        yield client, f"127.0.0.1:{port}"


@pytest.fixture
def stub(server: tuple[TestClient, str]) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server[1]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def add_sub(model: str, request_id: int, width: int = 16, second: int = 1) -> service_pb2.ModelInferRequest:
    """INPUT0 all ``request_id``, INPUT1 all ``second``: OUTPUT0 is then their sum, OUTPUT1 their difference."""
    request = service_pb2.ModelInferRequest(model_name=model, id=str(request_id))
    for name, value in (("INPUT0", request_id), ("INPUT1", second)):
        request.inputs.add(name=name, datatype="INT32", shape=[1, width])
        request.raw_input_contents.append(np.full(width, value, np.int32).tobytes())
    return request


def check_answer(reply: service_pb2.ModelStreamInferResponse, request_id: int, second: int = 1) -> None:
    assert reply.error_message == "", reply.error_message
    assert reply.infer_response.id == str(request_id)
    total, difference = (np.frombuffer(raw, np.int32) for raw in reply.infer_response.raw_output_contents)
    assert (total == request_id + second).all()
    assert (difference == request_id - second).all()


def test_a_stream_not_read_holds_at_most_its_bound_and_answers_every_request_in_order_once_read(
    server: tuple[TestClient, str], stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    """The first request waits in `held` for HOLD_MS; the 64 after it, to `wide`, are answered at once, but
    their answers go out only after the first one's. With room for BOUND requests, the server reads
    the first and BOUND - 1 more, and then no further: the client's sends stop on gRPC's flow control."""
    client, _ = server
    count = 64
    taken = 0

    def requests() -> Iterator[service_pb2.ModelInferRequest]:
        nonlocal taken
        yield add_sub("held", 0)
        for request_id in range(1, count + 1):
            taken += 1
            yield add_sub("wide", request_id, WIDTH)

    answers = stub.ModelStreamInfer(requests(), timeout=60)

    def inside() -> tuple[float, float]:
        samples = metrics_of(client)
        held = metric_value(samples, "model_serving_requests_in_flight", model="held")
        return held, metric_value(samples, "model_serving_requests_total", model="wide", protocol="grpc")

    wait_until(lambda: inside()[0] == 1 and inside()[1] >= BOUND - 1, "the stream's first requests to be inside")
    held, answered = inside()
    assert (held, answered) == (1, BOUND - 1), "the server read more of the stream than GRPC_STREAM_MAX_INFLIGHT"
    assert taken < count, f"all {count} requests were sent: nothing pushed back on the client"

    replies = [next(answers) for _ in range(count + 1)]
    for request_id, reply in enumerate(replies):
        check_answer(reply, request_id)
    assert taken == count


def test_a_client_reading_as_it_sends_gets_every_answer_in_order(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    count = 10 * BOUND
    replies = list(stub.ModelStreamInfer(add_sub("simple", request_id) for request_id in range(count)))
    assert len(replies) == count
    for request_id, reply in enumerate(replies):
        check_answer(reply, request_id)


def test_an_error_is_answered_in_its_request_place_and_the_stream_goes_on(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    bad = add_sub("simple", 1)
    bad.inputs[0].shape[1] = 15
    requests = [add_sub("simple", 0), bad, add_sub("nonexistent", 2), add_sub("simple", 3)]
    replies = list(stub.ModelStreamInfer(iter(requests)))
    check_answer(replies[0], 0)
    assert replies[1].infer_response.id == "1"
    assert "shape" in replies[1].error_message
    assert replies[2].infer_response.id == "2"
    assert "nonexistent" in replies[2].error_message
    check_answer(replies[3], 3)

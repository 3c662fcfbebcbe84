"""tritonclient.grpc, unchanged, against a real server: sync, aio, streaming; codes; typed contents."""

from __future__ import annotations

import asyncio
import queue
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.builders import batched_copy_of_simple, echo_bytes_onnx, reference_inputs
from tests.e2e.server import RunningServer, serve


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The example models, a BYTES echo, and `slow_simple` and `held_simple`, which hold each batch up to
    10 s to fill."""
    root = tmp_path_factory.mktemp("grpc")
    repository = root / "model_repository"
    shutil.copytree(built_repository, repository)
    echo_bytes_onnx(repository / "echo" / "1" / "model.onnx")
    batched_copy_of_simple(repository, "slow_simple", "  max_queue_delay_ms: 10000\n")
    batched_copy_of_simple(repository, "held_simple", "  max_queue_delay_ms: 10000\n")
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_address) as c:
        yield c


@pytest.fixture
def stub(server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def simple_inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = [
        grpcclient.InferInput("INPUT0", list(a.shape), "INT32"),
        grpcclient.InferInput("INPUT1", list(b.shape), "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata().name == "modelserve"
    metadata = client.get_model_metadata("simple", as_json=True)
    assert metadata["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": ["-1", "16"]}
    config = client.get_model_config("simple").config
    assert config.max_batch_size == 8
    assert config.input[0].data_type == grpcclient.model_config_pb2.TYPE_INT32
    assert list(config.input[0].dims) == [16]
    assert config.platform == "onnxruntime_onnx"


@pytest.mark.parametrize("batch", [1, 5, 8])
def test_simple_over_grpc(client: grpcclient.InferenceServerClient, batch: int) -> None:
    rng = np.random.default_rng(batch)
    a = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    result = client.infer("simple", simple_inputs(a, b), request_id=f"r{batch}")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response().id == f"r{batch}"


def test_every_example_model_answers_as_over_http(
    client: grpcclient.InferenceServerClient, server: RunningServer
) -> None:
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(server.address) as http:
        for model, name, datatype in (
            ("mlp", "input", "FP32"),
            ("tiny_cnn", "image", "FP32"),
            ("iris", "input", "FP64"),
        ):
            array = reference_inputs()[model]
            over_grpc = grpcclient.InferInput(name, list(array.shape), datatype)
            over_grpc.set_data_from_numpy(array)
            over_http = httpclient.InferInput(name, list(array.shape), datatype)
            over_http.set_data_from_numpy(array)
            a, b = client.infer(model, [over_grpc]), http.infer(model, [over_http])
            for output in b.get_response()["outputs"]:
                np.testing.assert_array_equal(a.as_numpy(output["name"]), b.as_numpy(output["name"]))


def test_bytes_over_grpc(client: grpcclient.InferenceServerClient) -> None:
    text = np.array([[b"hello", "wörld".encode()]], dtype=np.object_)
    item = grpcclient.InferInput("TEXT", [1, 2], "BYTES")
    item.set_data_from_numpy(text)
    assert client.infer("echo", [item]).as_numpy("ECHO").tolist() == text.tolist()


def test_typed_contents_are_accepted(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """Clients other than tritonclient send typed *_contents instead of raw bytes."""
    request = service_pb2.ModelInferRequest(model_name="simple", id="typed")
    for name, values in (("INPUT0", list(range(16))), ("INPUT1", [2] * 16)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(values)
    request.outputs.add(name="OUTPUT1")
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    assert np.frombuffer(response.raw_output_contents[0], np.int32).tolist() == [i - 2 for i in range(16)]
    assert response.id == "typed"


@pytest.mark.parametrize(
    ("build", "code", "message"),
    [
        (lambda r: setattr(r, "model_name", "resnet50"), grpc.StatusCode.NOT_FOUND, "resnet50"),
        (lambda r: setattr(r, "model_version", "x"), grpc.StatusCode.INVALID_ARGUMENT, "'x' is not a positive integer"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 15), grpc.StatusCode.INVALID_ARGUMENT, "does not match shape"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP32"), grpc.StatusCode.INVALID_ARGUMENT, "expects INT32"),
        (lambda r: r.raw_input_contents.pop(), grpc.StatusCode.INVALID_ARGUMENT, "one per input"),
        (lambda r: r.outputs.add(name="OUTPUT9"), grpc.StatusCode.INVALID_ARGUMENT, "no output 'OUTPUT9'"),
    ],
)
def test_bad_requests_get_their_code(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, build: Any, code: grpc.StatusCode, message: str
) -> None:
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.zeros(16, np.int32).tobytes())
    build(request)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == code
    assert message in caught.value.details()


def test_not_ready_is_unavailable_and_control_works(client: grpcclient.InferenceServerClient) -> None:
    assert {m.name: m.state for m in client.get_model_repository_index().models}["mlp"] == "READY"
    client.unload_model("mlp")
    assert not client.is_model_ready("mlp")
    item = grpcclient.InferInput("input", [1, 16], "FP32")
    item.set_data_from_numpy(np.zeros((1, 16), np.float32))
    with pytest.raises(InferenceServerException, match="not loaded") as refused:
        client.infer("mlp", [item])
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    client.load_model("mlp")
    assert client.is_model_ready("mlp")


def test_statistics(client: grpcclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("simple").model_stats[0].inference_count
    a = np.ones((3, 16), np.int32)
    client.infer("simple", simple_inputs(a, a))
    stats = client.get_inference_statistics("simple", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) == before + 3
    assert {s.name for s in client.get_inference_statistics().model_stats} >= {"simple", "mlp", "iris"}


def test_client_deadline_is_honoured(client: grpcclient.InferenceServerClient) -> None:
    """slow_simple waits up to 10 s for a batch; a 0.3 s deadline ends the call, and the server goes on."""
    a = np.ones((1, 16), np.int32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("slow_simple", simple_inputs(a, a), client_timeout=0.3)
    assert "DEADLINE_EXCEEDED" in caught.value.status()
    np.testing.assert_array_equal(client.infer("simple", simple_inputs(a, a)).as_numpy("OUTPUT0"), 2 * a)


def test_cancelled_calls_leave_the_queue_unrun_and_are_counted(
    server: RunningServer, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    """Five calls held in held_simple's queue are cancelled by their client; eight more then fill a
    batch, which runs the eight alone, and the five are counted as cancelled."""
    request = service_pb2.ModelInferRequest(model_name="held_simple")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.arange(16, dtype=np.int32).tobytes())
    cancelled = {"model": "held_simple", "reason": "cancelled"}
    before = server.metric("model_serving_requests_abandoned_total", **cancelled)
    samples_before = _inferred(server, "held_simple")

    calls = [stub.ModelInfer.future(request, timeout=30) for _ in range(5)]
    _until(lambda: server.metric("model_serving_queue_depth", model="held_simple") == 5, "five calls queued")
    for call in calls:
        call.cancel()
    live = [stub.ModelInfer.future(request, timeout=30) for _ in range(8)]
    answers = [call.result() for call in live]
    _until(
        lambda: server.metric("model_serving_requests_abandoned_total", **cancelled) == before + 5,
        "the five cancelled calls counted",
    )

    assert all(call.cancelled() for call in calls)
    assert len(answers) == 8
    assert _inferred(server, "held_simple") == samples_before + 8


def _inferred(server: RunningServer, model: str) -> int:
    """Samples the model has run, from Triton's statistics extension."""
    stats = httpx.get(f"{server.url}/v2/models/{model}/stats").raise_for_status().json()
    return sum(int(version["inference_count"]) for version in stats["model_stats"])


def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_shared_memory_rpcs_answer_clearly(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """CUDA shared memory is answered as by Triton without GPU support: no region, and none can be added."""
    assert stub.CudaSharedMemoryStatus(service_pb2.CudaSharedMemoryStatusRequest()).regions == {}
    with pytest.raises(grpc.RpcError) as caught:
        stub.CudaSharedMemoryRegister(service_pb2.CudaSharedMemoryRegisterRequest(name="gpu0", byte_size=64))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "register the region as system shared memory" in caught.value.details()


def test_streaming(client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(10):
            a = np.full((1, 16), i, np.int32)
            client.async_stream_infer("simple", simple_inputs(a, a), request_id=str(i))
        bad = np.zeros((1, 15), np.int32)
        client.async_stream_infer("simple", simple_inputs(bad, bad), request_id="bad")
        results, errors = {}, []
        for _ in range(11):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                results[result.get_response().id] = result.as_numpy("OUTPUT0")
    finally:
        client.stop_stream()
    assert sorted(results, key=int) == [str(i) for i in range(10)]
    for i, output in results.items():
        np.testing.assert_array_equal(output, np.full((1, 16), 2 * int(i), np.int32))
    assert len(errors) == 1
    assert "shape [1, 15]" in errors[0]


def test_aio_client(server: RunningServer) -> None:
    async def run() -> list[np.ndarray]:
        async with aioclient.InferenceServerClient(server.grpc_address) as c:
            assert await c.is_server_ready()
            calls = []
            for i in range(8):
                a = np.full((1, 16), i, np.int32)
                inputs = [aioclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
                for item in inputs:
                    item.set_data_from_numpy(a)
                calls.append(c.infer("simple", inputs))
            return [r.as_numpy("OUTPUT0") for r in await asyncio.gather(*calls)]

    for i, output in enumerate(asyncio.run(run())):
        np.testing.assert_array_equal(output, np.full((1, 16), 2 * i, np.int32))


def test_aio_streaming(server: RunningServer) -> None:
    async def run() -> dict[str, np.ndarray]:
        async with aioclient.InferenceServerClient(server.grpc_address) as c:

            async def requests() -> Any:
                for i in range(5):
                    a = np.full((2, 16), i, np.int32)
                    inputs = [aioclient.InferInput(n, [2, 16], "INT32") for n in ("INPUT0", "INPUT1")]
                    for item in inputs:
                        item.set_data_from_numpy(a)
                    yield {"model_name": "simple", "inputs": inputs, "request_id": str(i)}

            answers = {}
            async for result, error in c.stream_infer(requests()):
                assert error is None
                answers[result.get_response().id] = result.as_numpy("OUTPUT1")
                if len(answers) == 5:
                    break
            return answers

    answers = asyncio.run(run())
    assert sorted(answers) == [str(i) for i in range(5)]
    assert all((a == 0).all() for a in answers.values())

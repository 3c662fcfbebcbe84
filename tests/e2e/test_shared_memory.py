"""Triton's system shared-memory extension with tritonclient, over HTTP and gRPC, on `simple`.

The flow is that of Triton's simple_http_shm_client / simple_grpc_shm_client examples: the client
creates POSIX regions, registers them, and sends inputs and receives outputs through them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.e2e.server import RunningServer

SIZE = 16 * 4  # one [1, 16] INT32 tensor
PROTOCOLS: dict[str, ModuleType] = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(params=["http", "grpc"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(server: RunningServer, protocol: str) -> Iterator[Any]:
    address = server.address if protocol == "http" else server.grpc_address
    c = PROTOCOLS[protocol].InferenceServerClient(address)
    c.unregister_system_shared_memory()
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def regions(protocol: str) -> Iterator[dict[str, Any]]:
    """An input region holding INPUT0 and INPUT1, and an output region for OUTPUT0 and OUTPUT1."""
    tag = f"{protocol}_{os.getpid()}"
    handles = {
        "input": shm.create_shared_memory_region(f"in_{tag}", f"/ms_in_{tag}", SIZE * 2),
        "output": shm.create_shared_memory_region(f"out_{tag}", f"/ms_out_{tag}", SIZE * 2),
    }
    yield {"tag": tag, **handles}
    for handle in handles.values():
        shm.destroy_shared_memory_region(handle)


def shm_request(module: ModuleType, input_region: str, output_region: str) -> tuple[list[Any], list[Any]]:
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(input_region, SIZE)
    inputs[1].set_shared_memory(input_region, SIZE, offset=SIZE)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(output_region, SIZE)
    outputs[1].set_shared_memory(output_region, SIZE, offset=SIZE)
    return inputs, outputs


def test_inputs_and_outputs_through_shared_memory(client: Any, protocol: str, regions: dict[str, Any]) -> None:
    tag = regions["tag"]
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    shm.set_shared_memory_region(regions["input"], [a])
    shm.set_shared_memory_region(regions["input"], [b], offset=SIZE)
    client.register_system_shared_memory(f"in_{tag}", f"/ms_in_{tag}", SIZE * 2)
    client.register_system_shared_memory(f"out_{tag}", f"/ms_out_{tag}", SIZE * 2)
    status = client.get_system_shared_memory_status(**({"as_json": True} if protocol == "grpc" else {}))
    names = {r["name"] for r in status} if protocol == "http" else set(status["regions"])
    assert names == {f"in_{tag}", f"out_{tag}"}

    inputs, outputs = shm_request(PROTOCOLS[protocol], f"in_{tag}", f"out_{tag}")
    result = client.infer("simple", inputs, outputs=outputs)
    output = result.get_output("OUTPUT1")
    if protocol == "http":
        assert output["parameters"] == {
            "shared_memory_region": f"out_{tag}",
            "shared_memory_byte_size": SIZE,
            "shared_memory_offset": SIZE,
        }
        assert "data" not in output, "outputs in shared memory travel without data"
    else:
        assert output.parameters["shared_memory_region"].string_param == f"out_{tag}"
        assert output.parameters["shared_memory_byte_size"].int64_param == SIZE
        assert result.get_response().raw_output_contents[1] == b"", "outputs in shared memory travel without data"
    np.testing.assert_array_equal(shm.get_contents_as_numpy(regions["output"], np.int32, [1, 16]), a + b)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(regions["output"], np.int32, [1, 16], offset=SIZE), a - b)

    client.unregister_system_shared_memory(f"in_{tag}")
    with pytest.raises(InferenceServerException, match=f"'in_{tag}' is not registered"):
        client.infer("simple", inputs, outputs=outputs)


def test_refusals_are_clear_and_harmless(client: Any, protocol: str, regions: dict[str, Any]) -> None:
    tag = regions["tag"]
    refusals = [
        (lambda: client.register_system_shared_memory("x", "/ms_does_not_exist", SIZE), "cannot open"),
        (lambda: client.register_system_shared_memory("x", "../../etc/passwd", SIZE), "not the name of a POSIX"),
        (
            lambda: client.register_system_shared_memory("x", f"/ms_in_{tag}", SIZE, offset=SIZE * 2),
            "runs past the end",
        ),
        (lambda: client.get_system_shared_memory_status("nobody"), "'nobody' is not registered"),
    ]
    for call, message in refusals:
        with pytest.raises(InferenceServerException, match=message) as caught:
            call()
        assert caught.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")

    client.register_system_shared_memory(f"in_{tag}", f"/ms_in_{tag}", SIZE * 2)
    client.register_system_shared_memory(f"out_{tag}", f"/ms_out_{tag}", SIZE)
    with pytest.raises(InferenceServerException, match="already registered"):
        client.register_system_shared_memory(f"in_{tag}", f"/ms_in_{tag}", SIZE)
    module = PROTOCOLS[protocol]
    inputs, outputs = shm_request(module, f"in_{tag}", f"out_{tag}")
    with pytest.raises(InferenceServerException, match="run past the end of shared-memory region"):
        client.infer("simple", inputs, outputs=outputs)  # OUTPUT1 would land after the output region
    short = module.InferInput("INPUT0", [1, 16], "INT32")
    short.set_shared_memory(f"in_{tag}", SIZE - 4)
    with pytest.raises(InferenceServerException, match="shared_memory_byte_size 60 does not match shape"):
        client.infer("simple", [short, inputs[1]])

    a = np.ones((1, 16), dtype=np.int32)
    plain = [module.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for item in plain:
        item.set_data_from_numpy(a)
    np.testing.assert_array_equal(client.infer("simple", plain).as_numpy("OUTPUT0"), 2 * a)


def test_cuda_shared_memory_answers_as_triton_without_a_gpu(client: Any, protocol: str) -> None:
    """Triton's shm examples unregister every CUDA region first: that succeeds, and only registering is refused."""
    client.unregister_cuda_shared_memory()
    status = client.get_cuda_shared_memory_status(**({"as_json": True} if protocol == "grpc" else {}))
    assert status == ([] if protocol == "http" else {})
    with pytest.raises(InferenceServerException, match="system shared memory") as refused:
        client.register_cuda_shared_memory("gpu0", base64.b64encode(b"handle"), 0, SIZE)
    assert refused.value.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")

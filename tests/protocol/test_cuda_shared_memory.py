"""Triton's CUDA shared-memory extension, answered as Triton built without GPU support answers it, through
tritonclient over HTTP and gRPC: no region is listed, unregistering succeeds, registering is refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from modelserve.errors import InvalidInput
from modelserve.protocol.cuda_shared_memory import CudaSharedMemory
from tests.e2e.server import free_port
from tests.protocol.serving import TestClient, serving

INSTEAD = "register the region as system shared memory (/v2/systemsharedmemory) instead"


@pytest.fixture(scope="module")
def server(built_repository: Path) -> Iterator[tuple[TestClient, str]]:
    """The app with its gRPC port open, and where to reach that port."""
    port = free_port()
    with serving(built_repository, grpc_port=port) as client:
        yield client, f"127.0.0.1:{port}"


@pytest.fixture
def http(server: tuple[TestClient, str]) -> TestClient:
    return server[0]


@pytest.fixture
def grpc_client(server: tuple[TestClient, str]) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server[1]) as client:
        yield client


def test_http_lists_no_region_and_unregisters_as_a_no_op(http: TestClient) -> None:
    status = http.get("/v2/cudasharedmemory/status")
    assert (status.status_code, status.json()) == (200, [])
    for path in ("/v2/cudasharedmemory/unregister", "/v2/cudasharedmemory/region/gpu0/unregister"):
        answer = http.post(path)
        assert (answer.status_code, answer.content) == (200, b""), path


def test_http_status_of_a_named_region_is_refused_as_for_a_system_region(http: TestClient) -> None:
    cuda = http.get("/v2/cudasharedmemory/region/gpu0/status")
    system = http.get("/v2/systemsharedmemory/region/gpu0/status")
    assert (cuda.status_code, system.status_code) == (400, 400)
    assert cuda.json()["error"] == "CUDA shared-memory region 'gpu0' is not registered"
    assert system.json()["error"] == "shared-memory region 'gpu0' is not registered"


def test_http_registration_is_refused_saying_what_to_use(http: TestClient) -> None:
    body = {"raw_handle": {"b64": "aGFuZGxl"}, "device_id": 0, "byte_size": 64}
    answer = http.post("/v2/cudasharedmemory/region/gpu0/register", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith("cannot register CUDA shared-memory region 'gpu0': CUDA shared memory ")
    assert error.endswith(INSTEAD)


def test_grpc_lists_no_region_and_unregisters_as_a_no_op(grpc_client: grpcclient.InferenceServerClient) -> None:
    assert grpc_client.get_cuda_shared_memory_status(as_json=True) == {}
    grpc_client.unregister_cuda_shared_memory()
    grpc_client.unregister_cuda_shared_memory("gpu0")


def test_grpc_named_status_and_registration_are_invalid_arguments(
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client.get_cuda_shared_memory_status("gpu0")
    assert unknown.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert unknown.value.message() == "CUDA shared-memory region 'gpu0' is not registered"
    with pytest.raises(InferenceServerException) as refused:
        grpc_client.register_cuda_shared_memory("gpu0", base64.b64encode(b"handle"), 0, 64)
    assert refused.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert refused.value.message().endswith(INSTEAD)


@pytest.mark.parametrize(
    ("gpu", "reason"),
    [(False, "CUDA shared memory needs a GPU, and this server sees none"), (True, "not supported by this server")],
)
def test_a_refusal_says_whether_the_host_lacks_a_gpu(gpu: bool, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        CudaSharedMemory(gpu).register("gpu0")
    assert reason in refused.value.message

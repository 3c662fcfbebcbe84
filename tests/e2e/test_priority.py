"""Priority levels through real clients: tritonclient's ``priority`` reaches the model over HTTP and gRPC,
a level the model lacks is refused with the levels it has, and the model's config says what it has."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.builders import write_config
from tests.e2e.server import RunningServer, serve

PRIORITY = """dynamic_batching:
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy: {max_queue_size: 50}
  priority_queue_policy:
    1: {timeout_action: REJECT, default_timeout_microseconds: 5000000, max_queue_size: 10}
"""


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("priority")
    repository = root / "model_repository"
    shutil.copytree(built_repository / "simple" / "1", repository / "ranked" / "1")
    write_config(repository / "ranked", (built_repository / "simple" / "config.yaml").read_text() + PRIORITY)
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


def inputs(kind: Any, a: np.ndarray) -> list[Any]:
    """Both inputs of ``simple`` as ``kind`` (tritonclient's HTTP or gRPC InferInput)."""
    tensors = [kind(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in tensors:
        tensor.set_data_from_numpy(a)
    return tensors


def test_each_level_is_served_over_both_protocols(server: RunningServer) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    with (
        httpclient.InferenceServerClient(server.address) as http,
        grpcclient.InferenceServerClient(server.grpc_address) as grpc,
    ):
        answers = [
            http.infer("ranked", inputs(httpclient.InferInput, a), priority=1),
            http.infer("ranked", inputs(httpclient.InferInput, a), priority=2),
            http.infer("ranked", inputs(httpclient.InferInput, a)),
            grpc.infer("ranked", inputs(grpcclient.InferInput, a), priority=1),
            grpc.infer("ranked", inputs(grpcclient.InferInput, a)),
        ]
    for answer in answers:
        np.testing.assert_array_equal(answer.as_numpy("OUTPUT0"), 2 * a)


def test_a_level_the_model_lacks_is_refused_naming_its_levels(server: RunningServer) -> None:
    a = np.ones((1, 16), dtype=np.int32)
    with (
        httpclient.InferenceServerClient(server.address) as http,
        grpcclient.InferenceServerClient(server.grpc_address) as grpc,
    ):
        with pytest.raises(InferenceServerException) as over_http:
            http.infer("ranked", inputs(httpclient.InferInput, a), priority=3)
        with pytest.raises(InferenceServerException) as over_grpc:
            grpc.infer("ranked", inputs(grpcclient.InferInput, a), priority=7)

    assert over_http.value.status() == "400"
    assert "priority levels 1 (the highest) to 2" in over_http.value.message()
    assert over_grpc.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "priority levels 1 (the highest) to 2" in over_grpc.value.message()


def test_the_model_config_reports_its_levels_and_policies(server: RunningServer) -> None:
    batching = httpx.get(f"{server.url}/v2/models/ranked/config").raise_for_status().json()["dynamic_batching"]

    assert batching["priority_levels"] == 2
    assert batching["default_priority_level"] == 2
    assert batching["priority_queue_policy"]["1"] == {
        "timeout_action": "REJECT",
        "default_timeout_microseconds": 5_000_000,
        "allow_timeout_override": False,
        "max_queue_size": 10,
    }
    assert batching["priority_queue_policy"]["2"]["max_queue_size"] == 50

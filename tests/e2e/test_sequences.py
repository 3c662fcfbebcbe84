"""Stateful models through real clients: tritonclient's ``sequence_id``, ``sequence_start`` and
``sequence_end`` over HTTP and gRPC reach an accumulator (implicit state, START and CORRID controls)
under the direct and oldest strategies; interleaved sequences each keep their own running sum, an idle
sequence is released, an ended one is gone, and Triton's `simple_sequence` answers as NVIDIA's example
clients expect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.builders import accumulator_model, simple_sequence_onnx
from tests.e2e.server import RunningServer, serve

SIMPLE_SEQUENCE = """name: "simple_sequence"
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""
IDLE_US = 200_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("sequences")
    repository = root / "model_repository"
    accumulator_model(repository, "direct", max_batch_size=4)
    accumulator_model(repository, "narrow", max_batch_size=2)
    accumulator_model(repository, "oldest", strategy="oldest { max_candidate_sequences: 8 }", max_batch_size=4)
    accumulator_model(repository, "idle", idle_us=IDLE_US)
    simple_sequence_onnx(repository / "simple_sequence" / "1" / "model.onnx")
    (repository / "simple_sequence" / "config.pbtxt").write_text(SIMPLE_SEQUENCE)
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


def step(client: Any, kind: Any, model: str, value: int, sequence_id: int | str, **flags: bool) -> tuple[int, int]:
    """One request of a sequence: the accumulator's OUTPUT and ID."""
    tensor = kind("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32))
    result = client.infer(model, [tensor], sequence_id=sequence_id, **flags)
    return int(result.as_numpy("OUTPUT")[0, 0]), int(result.as_numpy("ID")[0, 0])


@pytest.mark.parametrize("model", ["direct", "oldest"])
def test_interleaved_sequences_keep_their_own_sums(server: RunningServer, model: str) -> None:
    with (
        httpclient.InferenceServerClient(server.address) as http,
        grpcclient.InferenceServerClient(server.grpc_address) as grpc,
    ):
        # Three sequences, their steps interleaved, alternating protocols.
        clients = [(http, httpclient.InferInput), (grpc, grpcclient.InferInput)]
        sums = {11: 0, 12: 0, 13: 0}
        for i in range(4):
            for n, sequence_id in enumerate(sums):
                client, kind = clients[(i + n) % 2]
                value = sequence_id * 10 + i
                got, echoed = step(client, kind, model, value, sequence_id, sequence_start=i == 0, sequence_end=i == 3)
                sums[sequence_id] += value
                assert (got, echoed) == (sums[sequence_id], sequence_id)


@pytest.mark.parametrize("model", ["narrow", "oldest"])
def test_concurrent_sequences_batch_and_keep_their_own_sums(server: RunningServer, model: str) -> None:
    """More sequences at once than the narrow model has slots (2): the rest wait in the backlog for a slot
    that an ending sequence frees, then run."""

    def run(sequence_id: int) -> list[int]:
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            return [
                step(
                    client,
                    grpcclient.InferInput,
                    model,
                    sequence_id + i,
                    sequence_id,
                    sequence_start=i == 0,
                    sequence_end=i == 4,
                )[0]
                for i in range(5)
            ]

    ids = [100 * k for k in range(1, 7)]
    with ThreadPoolExecutor(len(ids)) as pool:
        results = dict(zip(ids, pool.map(run, ids), strict=True))
    for sequence_id, outputs in results.items():
        assert outputs == list(np.cumsum([sequence_id + i for i in range(5)])), sequence_id


def test_the_end_frees_the_sequence(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as http:
        assert step(http, httpclient.InferInput, "direct", 5, 77, sequence_start=True, sequence_end=True) == (5, 77)
        with pytest.raises(InferenceServerException, match=r"sequence 77 .* must specify the START flag") as refused:
            step(http, httpclient.InferInput, "direct", 1, 77)
        assert refused.value.status() == "400"


def test_an_unknown_sequence_without_start_is_refused_over_grpc(server: RunningServer) -> None:
    with grpcclient.InferenceServerClient(server.grpc_address) as grpc:
        with pytest.raises(InferenceServerException, match=r"sequence 4242 .* START flag") as refused:
            step(grpc, grpcclient.InferInput, "oldest", 1, 4242)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
        tensor.set_data_from_numpy(np.array([[1]], dtype=np.int32))
        with pytest.raises(InferenceServerException, match="non-zero or non-empty correlation ID"):
            grpc.infer("oldest", [tensor])


def test_an_idle_sequence_is_released(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as http:
        assert step(http, httpclient.InferInput, "idle", 3, 9, sequence_start=True) == (3, 9)
        assert step(http, httpclient.InferInput, "idle", 4, 9) == (7, 9)
        # The server's idle timer is wall-clock time: outwait it, boundedly.
        time.sleep(3 * IDLE_US / 1e6)
        with pytest.raises(InferenceServerException, match=r"sequence 9 .* START flag"):
            step(http, httpclient.InferInput, "idle", 1, 9)
        assert step(http, httpclient.InferInput, "idle", 1, 9, sequence_start=True) == (1, 9)


def test_control_and_state_inputs_are_not_the_clients(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as http:
        metadata = http.get_model_metadata("direct")
    assert [t["name"] for t in metadata["inputs"]] == ["INPUT"]
    assert sorted(t["name"] for t in metadata["outputs"]) == ["ID", "OUTPUT"]


def test_simple_sequence_answers_as_nvidias_example_client_expects(server: RunningServer) -> None:
    """The checks of tritonclient's simple_{grpc,http}_sequence_sync_infer_client: OUTPUT is INPUT plus 1
    on a sequence's first request, INPUT after, for integer and string sequence ids alike."""
    values = [11, 7, 5, 3, 2, 0, 1]
    with (
        httpclient.InferenceServerClient(server.address) as http,
        grpcclient.InferenceServerClient(server.grpc_address) as grpc,
    ):
        for client, kind, sequence_id in ((grpc, grpcclient.InferInput, 1000), (http, httpclient.InferInput, "a-uuid")):
            sent = [0, *values]
            for i, value in enumerate(sent):
                tensor = kind("INPUT", [1, 1], "INT32")
                tensor.set_data_from_numpy(np.full([1, 1], value, dtype=np.int32))
                result = client.infer(
                    "simple_sequence",
                    [tensor],
                    sequence_id=sequence_id,
                    sequence_start=i == 0,
                    sequence_end=i == len(sent) - 1,
                )
                assert int(result.as_numpy("OUTPUT")[0, 0]) == (1 if i == 0 else values[i - 1])


def test_sequence_parameters_to_a_stateless_model_are_ignored(tmp_path: Path) -> None:
    """As Triton does: the dynamic batcher has no use for them."""
    repository = tmp_path / "model_repository"
    simple_sequence_onnx(repository / "plain" / "1" / "model.onnx")
    with (
        serve(repository, tmp_path / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running,
        httpclient.InferenceServerClient(running.address) as http,
    ):
        tensors = []
        for name, value in (("INPUT", 4), ("START", 1), ("READY", 1)):
            tensor = httpclient.InferInput(name, [1, 1], "INT32")
            tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32))
            tensors.append(tensor)
        result = http.infer("plain", tensors, sequence_id=5, sequence_end=True)
        assert int(result.as_numpy("OUTPUT")[0, 0]) == 5

"""On-demand loading seen by tritonclient: a Triton client that asks metadata, then infers, on a model
nobody loaded gets it loaded once, whoever asks at the same time."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.e2e.server import RunningServer, serve


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("on-demand")
    with serve(built_repository, root / "server.log", "--model-control-mode", "on-demand") as running:
        yield running


def simple_inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_metadata_then_inference_on_a_model_nobody_loaded(server: RunningServer) -> None:
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        assert not client.is_model_ready("simple")  # readiness is a probe: it never loads
        metadata = client.get_model_metadata("simple", as_json=True)
        assert metadata["inputs"][0]["name"] == "INPUT0"
        assert client.is_model_ready("simple")
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        b = np.ones((1, 16), np.int32)
        np.testing.assert_array_equal(client.infer("simple", simple_inputs(a, b)).as_numpy("OUTPUT0"), a + b)
    assert server.metric("model_serving_cold_starts_total", model="simple") == 1


def test_concurrent_first_requests_share_one_load_and_all_get_answers(server: RunningServer) -> None:
    def infer(seed: int) -> np.ndarray:
        tensor = grpcclient.InferInput("input", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.random.default_rng(seed).uniform(0, 7, (1, 4)))
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            return client.infer("iris", [tensor]).as_numpy("predict")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(infer, range(8)))
    assert all(answer.shape == (1,) for answer in answers)
    assert server.metric("model_serving_model_load_duration_seconds_count", model="iris") == 1
    assert server.metric("model_serving_cold_starts_total", model="iris") >= 1

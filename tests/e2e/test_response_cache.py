"""The response cache against a real server, over HTTP and gRPC with tritonclient: a repeated request
is answered without running the model, and Triton's statistics and our metrics say so."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.builders import write_config
from tests.e2e.server import RunningServer, serve


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`cached`, a copy of `simple` that enables the response cache, beside `simple`, which does not."""
    root = tmp_path_factory.mktemp("cache")
    repository = root / "model_repository"
    shutil.copytree(built_repository / "simple", repository / "simple")
    shutil.copytree(built_repository / "simple" / "1", repository / "cached" / "1")
    config = (built_repository / "simple" / "config.yaml").read_text()
    write_config(repository / "cached", config + "response_cache:\n  enable: true\n")
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


def http_inputs(a: np.ndarray) -> list[httpclient.InferInput]:
    inputs = [httpclient.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    return inputs


def grpc_inputs(a: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = [grpcclient.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    return inputs


def statistics(server: RunningServer, model: str) -> dict[str, object]:
    document = httpx.get(f"{server.url}/v2/models/{model}/stats").raise_for_status().json()
    stats: dict[str, object] = document["model_stats"][0]
    return stats


def test_a_repeated_request_is_answered_from_the_cache_over_both_protocols(server: RunningServer) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    with (
        httpclient.InferenceServerClient(server.address) as http,
        grpcclient.InferenceServerClient(server.grpc_address) as grpc,
    ):
        first = http.infer("cached", http_inputs(a))
        again = http.infer("cached", http_inputs(a))
        over_grpc = grpc.infer("cached", grpc_inputs(a))
        other = http.infer("cached", http_inputs(a + 1))
        grpc_stats = grpc.get_inference_statistics("cached", as_json=True)["model_stats"][0]["inference_stats"]

    for result in (first, again, over_grpc):
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros_like(a))
    np.testing.assert_array_equal(other.as_numpy("OUTPUT0"), 2 * (a + 1))
    stats = statistics(server, "cached")
    inference = stats["inference_stats"]
    assert isinstance(inference, dict)
    assert stats["execution_count"] == 2, stats  # the first request and the other input ran; two hits did not
    assert inference["cache_hit"]["count"] == 2
    assert inference["cache_miss"]["count"] == 2
    assert inference["success"]["count"] == 4
    assert int(grpc_stats["cache_hit"]["count"]) == 2  # Triton's statistics over gRPC, as its clients read them
    config = httpx.get(f"{server.url}/v2/models/cached/config").json()
    assert config["response_cache"] == {"enable": True}
    assert server.metric("model_serving_response_cache_lookups_total", model="cached", result="hit") == 2
    assert server.metric("model_serving_response_cache_lookups_total", model="cached", result="miss") == 2
    assert server.metric("model_serving_response_cache_bytes") == 2 * 2 * 16 * 4  # two answers of two outputs


def test_the_outputs_asked_for_are_part_of_the_request(server: RunningServer) -> None:
    a = np.full((1, 16), 7, dtype=np.int32)
    with httpclient.InferenceServerClient(server.address) as http:
        both = http.infer("cached", http_inputs(a))
        one = http.infer("cached", http_inputs(a), outputs=[httpclient.InferRequestedOutput("OUTPUT1")])

    assert {o["name"] for o in both.get_response()["outputs"]} == {"OUTPUT0", "OUTPUT1"}
    assert [o["name"] for o in one.get_response()["outputs"]] == ["OUTPUT1"]


def test_a_model_that_does_not_enable_the_cache_runs_every_request(server: RunningServer) -> None:
    a = np.ones((1, 16), dtype=np.int32)
    with httpclient.InferenceServerClient(server.address) as http:
        for _ in range(3):
            http.infer("simple", http_inputs(a))

    stats = statistics(server, "simple")
    inference = stats["inference_stats"]
    assert isinstance(inference, dict)
    assert stats["execution_count"] == 3
    assert inference["cache_hit"]["count"] == inference["cache_miss"]["count"] == 0

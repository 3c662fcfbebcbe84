"""Loading with a config override and with files in the request, as Triton's repository extension has
it and tritonclient's ``load_model(config=..., files=...)`` sends it, over HTTP and gRPC."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.server import RunningServer, serve


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("overrides")
    repository = root / "model_repository"
    shutil.copytree(built_repository / "simple", repository / "simple")
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


def inputs(kind: Any, a: np.ndarray) -> list[Any]:
    tensors = [kind(name, list(a.shape), "INT32") for name in ("INPUT0", "INPUT1")]
    for t in tensors:
        t.set_data_from_numpy(a)
    return tensors


def test_a_config_override_serves_until_a_plain_load(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as client:
        config = client.get_model_config("simple")
        assert config["max_batch_size"] == 8
        client.load_model("simple", config=json.dumps({**config, "max_batch_size": 4}))
        overridden = client.get_model_config("simple")["max_batch_size"]
        with pytest.raises(InferenceServerException, match="batch"):
            client.infer("simple", inputs(httpclient.InferInput, np.ones((6, 16), np.int32)))
        client.load_model("simple")
        restored = client.get_model_config("simple")["max_batch_size"]

    assert (overridden, restored) == (4, 8)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_model_sent_as_files_is_served(server: RunningServer, protocol: str, built_repository: Path) -> None:
    name = f"sent_{protocol}"
    model = (built_repository / "simple" / "1" / "model.onnx").read_bytes()
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    kind: Any = httpclient if protocol == "http" else grpcclient
    with kind.InferenceServerClient(server.address if protocol == "http" else server.grpc_address) as client:
        config = (
            client.get_model_config("simple")
            if protocol == "http"
            else client.get_model_config("simple", as_json=True)["config"]
        )
        config = {**config, "name": name}
        client.load_model(name, config=json.dumps(config), files={"file:1/model.onnx": model})
        result = client.infer(name, inputs(kind.InferInput, a))
        client.unload_model(name)

    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)


@pytest.mark.parametrize(
    ("parameters", "words"),
    [
        ({"config": "{not json"}, "the config parameter is not JSON"),
        ({"config": json.dumps({"max_batch_size": "many"})}, "max_batch_size"),
        ({"config": json.dumps({"platform": "caffe2"})}, "platform 'caffe2' is not served here"),
        ({"config": "{}", "file:../escape.onnx": "AAAA"}, "must be <version>/<name>"),
        ({"config": "{}", "file:1/model.onnx": "not base64!"}, "is not base64"),
        ({"file:1/model.onnx": "AAAA"}, "need a config parameter"),
        ({"colour": "blue"}, "unknown load parameter 'colour'"),
    ],
)
def test_a_bad_load_parameter_is_refused_and_the_model_keeps_serving(
    server: RunningServer, parameters: dict[str, str], words: str
) -> None:
    import httpx

    refused = httpx.post(f"{server.url}/v2/repository/models/simple/load", json={"parameters": parameters})
    with httpclient.InferenceServerClient(server.address) as client:
        ready = client.is_model_ready("simple")

    assert refused.status_code == 400, refused.text
    assert "failed to load 'simple'" in refused.json()["error"]
    assert words in refused.json()["error"]
    assert ready

"""The model-repository extension and model control over HTTP: index, load, unload, the control mode,
and broken models that fail alone while the others keep serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.builders import broken_repository
from tests.protocol.serving import TestClient, serving

BROKEN = {
    # model: fragments its failure names (the file at fault, and what is wrong with it)
    "bad_yaml": ["bad_yaml/config.yaml", "invalid YAML"],
    "unknown_field": ["unknown_field/config.yaml", "max_batch_sise", "unknown field"],
    "corrupt": ["corrupt/1/model.onnx"],
    "wrong_dims": ["wrong_dims/config.yaml", "wrong_dims/1/model.onnx", "[-1, 5]", "[-1, 4]"],
}
MLP_ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}


def _index(client: TestClient, body: Any = None) -> list[dict[str, Any]]:
    response = client.post("/v2/repository/index", json=body)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


def _mlp_serves(client: TestClient) -> None:
    response = client.post("/v2/models/mlp/infer", json=MLP_ROW)
    assert response.status_code == 200, response.text
    assert np.array(response.json()["outputs"][0]["data"]).shape == (4,)


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    return message


# -- index -------------------------------------------------------------------------------------------


def test_index_lists_every_model_with_its_state(client: TestClient) -> None:
    entries = _index(client)

    assert entries == [
        {"name": name, "version": "1", "state": "READY", "reason": ""} for name in ["iris", "mlp", "simple", "tiny_cnn"]
    ]


def test_index_shows_unloaded_models_and_filters_ready_ones(built_repository: Path) -> None:
    with serving(built_repository, load_models=["simple"]) as client:
        everything = {e["name"]: e for e in _index(client)}
        ready_only = _index(client, {"ready": True})

    assert everything["simple"]["state"] == "READY"
    assert everything["mlp"] == {"name": "mlp", "state": "UNAVAILABLE", "reason": ""}
    assert set(everything) == {"iris", "mlp", "simple", "tiny_cnn"}
    assert [e["name"] for e in ready_only] == ["simple"]


# -- load and unload ---------------------------------------------------------------------------------


def test_load_and_unload_a_model(example_repository: Path) -> None:
    with serving(example_repository, load_models=["simple"]) as client:
        assert client.get("/v2/models/mlp/ready").status_code == 503

        loaded = client.post("/v2/repository/models/mlp/load")

        assert loaded.status_code == 200, loaded.text
        assert client.get("/v2/models/mlp/ready").status_code == 200
        _mlp_serves(client)
        assert {"name": "mlp", "version": "1", "state": "READY", "reason": ""} in _index(client)

        unloaded = client.post("/v2/repository/models/mlp/unload")

        assert unloaded.status_code == 200, unloaded.text
        assert "load" in _error(client.post("/v2/models/mlp/infer", json=MLP_ROW), 503)
        assert client.get("/v2/models/mlp/ready").status_code == 503
        entry = next(e for e in _index(client) if e["name"] == "mlp")
        assert entry["state"] == "UNAVAILABLE"
        assert client.post("/v2/repository/models/mlp/load").status_code == 200
        _mlp_serves(client)


def test_reload_of_a_loaded_model_keeps_it_serving(built_repository: Path) -> None:
    with serving(built_repository, load_models=["mlp"]) as client:
        assert client.post("/v2/repository/models/mlp/load", json={}).status_code == 200
        _mlp_serves(client)


def test_load_and_unload_of_an_unknown_model_are_404(client: TestClient) -> None:
    for action in ("load", "unload"):
        message = _error(client.post(f"/v2/repository/models/no_such_model/{action}"), 404)
        assert "no_such_model" in message
    _mlp_serves(client)


def test_a_load_with_a_malformed_config_parameter_is_refused(client: TestClient) -> None:
    response = client.post("/v2/repository/models/mlp/load", json={"parameters": {"config": "{nope"}})

    assert "failed to load 'mlp': the config parameter is not JSON" in _error(response, 400)
    _mlp_serves(client)


def test_control_body_that_is_not_json_is_400(client: TestClient) -> None:
    response = client.post("/v2/repository/index", content=b"{nope")

    assert "not valid JSON" in _error(response, 400)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/repository/models/mlp/load",
        "/v2/repository/models/mlp/unload",
        "/v1/models/mlp/load",
        "/v1/models/mlp/load?model_format=onnx",
        "/v1/models/mlp/unload",
    ],
)
def test_control_is_refused_outside_explicit_mode(built_repository: Path, path: str) -> None:
    with serving(built_repository, model_control_mode="none") as client:
        message = _error(client.post(path), 400)

        assert "--model-control-mode explicit" in message
        _mlp_serves(client)
        assert len(_index(client, {"ready": True})) == 4  # mode none loads everything at start


# -- broken models -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The four example models plus four broken ones, all asked for at start."""
    root = broken_repository(tmp_path_factory.mktemp("broken") / "model_repository", built_repository)
    with serving(root) as client:
        yield client


def test_broken_models_do_not_stop_startup(broken: TestClient) -> None:
    response = broken.get("/health")

    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "degraded"
    assert health["models_loaded"] == ["iris", "mlp", "simple", "tiny_cnn"]
    assert set(health["models_failed"]) == set(BROKEN)
    for model, fragments in BROKEN.items():
        for fragment in fragments:
            assert fragment in health["models_failed"][model], f"{fragment!r} missing from {model}'s reason"
    _mlp_serves(broken)


def test_index_shows_why_broken_models_failed(broken: TestClient) -> None:
    entries = {e["name"]: e for e in _index(broken)}

    for model, fragments in BROKEN.items():
        assert entries[model]["state"] == "FAILED"
        assert fragments[0] in entries[model]["reason"]


@pytest.mark.parametrize("model", sorted(BROKEN))
def test_broken_model_refuses_inference_with_503_and_the_reason(broken: TestClient, model: str) -> None:
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

    message = _error(broken.post(f"/v2/models/{model}/infer", json=request), 503)

    assert f"model '{model}'" in message
    assert "failed to load" in message
    assert BROKEN[model][0] in message


@pytest.mark.parametrize("model", sorted(BROKEN))
@pytest.mark.parametrize("path", ["/v2/repository/models/{}/load", "/v1/models/{}/load"], ids=["v2", "v1"])
def test_loading_a_broken_model_is_400_naming_the_file(broken: TestClient, model: str, path: str) -> None:
    message = _error(broken.post(path.format(model)), 400)

    for fragment in BROKEN[model]:
        assert fragment in message
    _mlp_serves(broken)
    assert broken.get("/v2/health/ready").status_code == 200


def test_a_model_fixed_on_disk_loads_on_request(example_repository: Path) -> None:
    corrupt = example_repository / "later" / "1" / "model.onnx"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not onnx")

    with serving(example_repository, load_models=["later"], ready_path="/health/startup") as client:
        assert "later/1/model.onnx" in _error(client.post("/v2/repository/models/later/load"), 400)
        assert client.get("/health/ready").status_code == 503  # a model named at startup is missing
        corrupt.write_bytes((example_repository / "mlp" / "1" / "model.onnx").read_bytes())

        assert client.post("/v2/repository/models/later/load").status_code == 200
        assert client.get("/health/ready").status_code == 200
        response = client.post("/v2/models/later/infer", json=MLP_ROW)
        assert response.status_code == 200, response.text
        assert client.get("/health").json()["models_failed"] == {}

"""Ensembles (platform ensemble) served by a real `modelserve serve`, asked by tritonclient over HTTP and gRPC:
Triton's classic pipeline, preprocess (Python) → a ResNet-style CNN (ONNX) → top-k postprocess (Python),
answers what the three models answer when called one after the other; failures name their step; bad
ensembles are refused at load with the reason; statistics count the ensemble and its step models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.builders import failing_onnx, scale_onnx, write_config
from tests.e2e.server import RunningServer, serve
from tests.ensemble_models import POSITIVE, POSITIVE_CONFIG, SIZE, TOP_K, ensemble_config, write_classifier
from tests.python_models import write_python_model

pytestmark = pytest.mark.e2e

STEPS = ("preprocess", "resnet", "postprocess")
FOUR_IN = "[{name: IN, datatype: FP32, dims: [4]}]"
FOUR_OUT = "[{name: OUT, datatype: FP32, dims: [4]}]"
# A step reading a tensor nothing writes: refused when it loads, before its step models load.
UNWRITTEN = "    - {model_name: double, input_map: {x: IN}, output_map: {y: OUT}}\n" + (
    "    - {model_name: double, input_map: {x: doubled}, output_map: {y: EXTRA}}\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("ensembles")
    repository = root / "model_repository"
    repository.mkdir()
    write_classifier(repository)
    scale_onnx(repository / "double" / "1" / "model.onnx", factor=2.0)
    write_python_model(repository, "positive", POSITIVE, POSITIVE_CONFIG)
    guarded = "    - {model_name: double, input_map: {x: IN}, output_map: {y: doubled}}\n" + (
        "    - {model_name: positive, model_version: 1, input_map: {X: doubled}, output_map: {Y: OUT}}\n"
    )
    write_config(repository / "guarded", ensemble_config("guarded", guarded, inputs=FOUR_IN, outputs=FOUR_OUT))
    failing_onnx(repository / "failing" / "1" / "model.onnx", features=4)
    failing = "    - {model_name: failing, input_map: {x: IN}, output_map: {y: OUT}}\n"
    write_config(repository / "fails", ensemble_config("fails", failing, inputs=FOUR_IN, outputs=FOUR_OUT))
    outputs = "[{name: OUT, datatype: FP32, dims: [4]}, {name: EXTRA, datatype: FP32, dims: [4]}]"
    write_config(repository / "unwritten", ensemble_config("unwritten", UNWRITTEN, inputs=FOUR_IN, outputs=outputs))
    classify = (repository / "classify" / "config.yaml").read_text()
    mistyped = classify.replace("name: classify", "name: mistyped").replace("UINT8", "FP32")  # preprocess takes UINT8
    write_config(repository / "mistyped", mistyped)
    # Only the ensembles: their step models load with them.
    args = ("--model-control-mode", "explicit", *(f"--load-model={name}" for name in ("classify", "guarded", "fails")))
    with serve(repository, root / "server.log", *args) as running:
        yield running


def _inputs(module: Any, **arrays: np.ndarray) -> list[Any]:
    tensors = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def _by_hand(client: httpclient.InferenceServerClient, images: np.ndarray) -> dict[str, np.ndarray]:
    """The three step models called one after the other, as a client would without the ensemble."""
    normalized = client.infer("preprocess", _inputs(httpclient, IMAGE=images)).as_numpy("NORMALIZED")
    logits = client.infer("resnet", _inputs(httpclient, input=normalized)).as_numpy("logits")
    answer = client.infer("postprocess", _inputs(httpclient, LOGITS=logits))
    return {"CLASSES": answer.as_numpy("CLASSES"), "SCORES": answer.as_numpy("SCORES")}


def test_loading_the_ensemble_loaded_its_step_models(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as client:
        index = {entry["name"]: entry.get("state") for entry in client.get_model_repository_index()}
        assert all(client.is_model_ready(name) for name in ("classify", *STEPS))
    assert index["mistyped"] != "READY"
    assert index["unwritten"] != "READY"


def test_the_ensemble_answers_what_its_three_models_answer_called_by_hand(server: RunningServer) -> None:
    images = _images(4)
    with httpclient.InferenceServerClient(server.address) as client:
        answer = client.infer("classify", _inputs(httpclient, IMAGE=images), request_id="pipeline-1")
        expected = _by_hand(client, images)
    assert answer.get_response()["id"] == "pipeline-1"
    classes, scores = answer.as_numpy("CLASSES"), answer.as_numpy("SCORES")
    assert classes.shape == (4, TOP_K)
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, expected["CLASSES"])
    np.testing.assert_allclose(scores, expected["SCORES"], rtol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()  # most probable first: the postprocessing really ran


def test_the_ensemble_over_grpc_answers_the_outputs_asked_for(server: RunningServer) -> None:
    images = _images(2, seed=1)
    with httpclient.InferenceServerClient(server.address) as client:
        expected = _by_hand(client, images)
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        both = client.infer("classify", _inputs(grpcclient, IMAGE=images))
        scores_only = client.infer(
            "classify", _inputs(grpcclient, IMAGE=images), outputs=[grpcclient.InferRequestedOutput("SCORES")]
        )
    np.testing.assert_array_equal(both.as_numpy("CLASSES"), expected["CLASSES"])
    np.testing.assert_allclose(both.as_numpy("SCORES"), expected["SCORES"], rtol=1e-6)
    np.testing.assert_allclose(scores_only.as_numpy("SCORES"), expected["SCORES"], rtol=1e-6)
    assert scores_only.as_numpy("CLASSES") is None


def test_metadata_and_config_are_tritons_for_an_ensemble(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as client:
        metadata = client.get_model_metadata("classify")
        config = client.get_model_config("classify")
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        grpc_metadata = client.get_model_metadata("classify", as_json=True)
        grpc_config = client.get_model_config("classify", as_json=True)["config"]
    assert metadata["platform"] == grpc_metadata["platform"] == "ensemble"
    assert metadata["inputs"] == [{"name": "IMAGE", "datatype": "UINT8", "shape": [-1, SIZE, SIZE, 3]}]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("CLASSES", "INT64", [-1, TOP_K]),
        ("SCORES", "FP32", [-1, TOP_K]),
    ]
    assert (config["platform"], config["backend"], config["max_batch_size"]) == ("ensemble", "", 8)
    assert "instance_group" not in config
    assert "dynamic_batching" not in config
    assert config["ensemble_scheduling"] == {
        "step": [
            {
                "model_name": "preprocess",
                "model_version": -1,
                "input_map": {"IMAGE": "IMAGE"},
                "output_map": {"NORMALIZED": "normalized_image"},
            },
            {
                "model_name": "resnet",
                "model_version": -1,
                "input_map": {"input": "normalized_image"},
                "output_map": {"logits": "logits"},
            },
            {
                "model_name": "postprocess",
                "model_version": -1,
                "input_map": {"LOGITS": "logits"},
                "output_map": {"CLASSES": "CLASSES", "SCORES": "SCORES"},
            },
        ]
    }
    steps = grpc_config["ensemble_scheduling"]["step"]  # protobuf's JSON: int64 as a string
    assert [(s["model_name"], s["model_version"], s["input_map"]) for s in steps] == [
        ("preprocess", "-1", {"IMAGE": "IMAGE"}),
        ("resnet", "-1", {"input": "normalized_image"}),
        ("postprocess", "-1", {"LOGITS": "logits"}),
    ]


def _stats(client: httpclient.InferenceServerClient, model: str) -> dict[str, int]:
    [entry] = client.get_inference_statistics(model)["model_stats"]
    return {
        "success": entry["inference_stats"]["success"]["count"],
        "fail": entry["inference_stats"]["fail"]["count"],
        "inferences": entry["inference_count"],
        "executions": entry["execution_count"],
    }


def test_statistics_count_the_ensembles_requests_and_each_step_models(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as client:
        before = {name: _stats(client, name) for name in ("classify", *STEPS)}
        for seed in range(3):
            client.infer("classify", _inputs(httpclient, IMAGE=_images(2, seed)))
        after = {name: _stats(client, name) for name in ("classify", *STEPS)}
    change = {name: {k: after[name][k] - before[name][k] for k in after[name]} for name in after}
    assert change["classify"] == {"success": 3, "fail": 0, "inferences": 6, "executions": 3}
    for step in STEPS:  # each request went through every step model's own batcher, once
        assert (change[step]["success"], change[step]["inferences"]) == (3, 6), step


def test_a_steps_400_is_the_ensembles_400_naming_the_step(server: RunningServer) -> None:
    negative = {"inputs": [{"name": "IN", "datatype": "FP32", "shape": [1, 4], "data": [1, -2, 3, 4]}]}
    refused = httpx.post(f"{server.url}/v2/models/guarded/infer", json=negative, timeout=30)
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "ensemble 'guarded' step 2 (model 'positive'): model 'positive' version 1: X must not be negative"
    )
    with grpcclient.InferenceServerClient(server.grpc_address) as client, pytest.raises(InferenceServerException) as e:
        client.infer("guarded", _inputs(grpcclient, IN=np.array([[-1, 0, 0, 0]], dtype=np.float32)))
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "ensemble 'guarded' step 2 (model 'positive')" in e.value.message()
    answered = httpx.post(
        f"{server.url}/v2/models/guarded/infer",
        json={"inputs": [{**negative["inputs"][0], "data": [1, 2, 3, 4]}]},
        timeout=30,
    )
    assert answered.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


def test_a_step_that_fails_is_the_ensembles_500_naming_the_step(server: RunningServer) -> None:
    request = {"inputs": [{"name": "IN", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    with httpclient.InferenceServerClient(server.address) as client:
        before = _stats(client, "fails")
        failed = httpx.post(f"{server.url}/v2/models/fails/infer", json=request, timeout=30)
        after = _stats(client, "fails")
    assert failed.status_code == 500
    assert failed.json()["error"].startswith("ensemble 'fails' step 1 (model 'failing'): ")
    assert after["fail"] - before["fail"] == 1
    assert after["success"] == before["success"]


def test_bad_ensembles_are_refused_at_load_with_the_reason(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.address) as client:
        with pytest.raises(InferenceServerException) as unwritten:
            client.load_model("unwritten")
        with pytest.raises(InferenceServerException) as mistyped:
            client.load_model("mistyped")
        index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert unwritten.value.status() == mistyped.value.status() == "400"
    assert (
        "ensemble 'unwritten' step 2 (model 'double'): input 'x' reads 'doubled', which is neither an input of "
        "the ensemble nor any step's output" in unwritten.value.message()
    )
    assert (
        "ensemble 'mistyped' step 1 (model 'preprocess') input IMAGE UINT8 [-1, 16, 16, 3] cannot take 'IMAGE' "
        "(the ensemble's input IMAGE FP32 [-1, 16, 16, 3]): the datatypes differ" in mistyped.value.message()
    )
    assert index["unwritten"]["state"] == "FAILED"
    assert "reads 'doubled'" in index["unwritten"]["reason"]


def test_an_ensemble_loads_from_tritons_json_configuration(server: RunningServer) -> None:
    """The configuration GET .../config answers, sent back as a load's config parameter, serves the same
    ensemble; a broken one is refused with the reason."""
    with httpclient.InferenceServerClient(server.address) as client:
        config = client.get_model_config("guarded")
        broken = json.loads(json.dumps(config))
        broken["ensemble_scheduling"]["step"][1]["input_map"] = {"X": "nothing"}
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("guarded", config=json.dumps(broken))
        client.load_model("guarded", config=json.dumps(config))
        answer = client.infer("guarded", _inputs(httpclient, IN=np.ones((1, 4), dtype=np.float32)))
    assert "ensemble 'guarded' step 2 (model 'positive'): input 'X' reads 'nothing'" in refused.value.message()
    np.testing.assert_array_equal(answer.as_numpy("OUT"), np.full((1, 4), 2.0, dtype=np.float32))


def test_unloading_a_step_model_unloads_the_ensemble_and_loading_the_ensemble_brings_both_back(
    server: RunningServer,
) -> None:
    with httpclient.InferenceServerClient(server.address) as client:
        client.unload_model("positive")
        assert not client.is_model_ready("guarded")
        assert client.is_model_ready("double")  # a step model of it, not unloaded
        with pytest.raises(InferenceServerException) as refused:
            client.infer("guarded", _inputs(httpclient, IN=np.ones((1, 4), dtype=np.float32)))
        client.load_model("guarded")
        ready = client.is_model_ready("guarded") and client.is_model_ready("positive")
    assert refused.value.status() == "503"
    assert "unloaded with model 'positive', which a step calls" in refused.value.message()
    assert ready

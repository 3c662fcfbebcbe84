"""Ensembles served by a real model manager over real ONNX and Python models: loaded with their step models,
run step by step through the step models' own batchers, failures named by step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from modelserve.errors import DeadlineExceeded, InferenceFailed, InvalidInput, ModelLoadError, ModelNotReady
from modelserve.models.records import ModelState
from modelserve.types import InferenceRequest
from tests.builders import scale_onnx, write_config
from tests.ensemble_models import POSITIVE, POSITIVE_CONFIG, ensemble_config
from tests.models.conftest import Factory
from tests.python_models import SLEEPS, sleeps_config, write_python_model

FOUR = "[{name: IN, datatype: FP32, dims: [4]}]"
X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, -1.0, 8.0]], dtype=np.float32)

# Passes X on as Y, the array itself.
IDENTITY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        x = pb_utils.get_input_tensor_by_name(requests[0], "X").as_numpy()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)])]
"""
# Two calls meet before either answers: they must run at the same time, or the barrier breaks after 10 s.
MEETS = """import threading

import triton_python_backend_utils as pb_utils

meeting = threading.Barrier(2, timeout=10)


class TritonPythonModel:
    def execute(self, requests):
        meeting.wait()
        x = pb_utils.get_input_tensor_by_name(requests[0], "X").as_numpy()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)])]
"""
ONE_BY_ONE = """backend: python
max_batch_size: 0
instance_count: 2
inputs: [{name: X, datatype: FP32, dims: [4]}]
outputs: [{name: Y, datatype: FP32, dims: [4]}]
"""


def _step(model: str, inputs: str, outputs: str, version: int = -1) -> str:
    return f"    - {{model_name: {model}, model_version: {version}, input_map: {inputs}, output_map: {outputs}}}\n"


def _scales(repository: Path) -> None:
    scale_onnx(repository / "double" / "1" / "model.onnx", factor=2.0)
    scale_onnx(repository / "triple" / "1" / "model.onnx", factor=3.0)


def _chain(repository: Path, name: str = "chain", *, first: str = "double", second: str = "triple") -> None:
    """IN → first → second → OUT, and first → MID as well; no version folder at all."""
    steps = _step(first, "{x: IN}", "{y: mid}") + _step(second, "{x: mid}", "{y: OUT}")
    steps += _step(first, "{x: IN}", "{y: MID}")
    outputs = "[{name: OUT, datatype: FP32, dims: [4]}, {name: MID, datatype: FP32, dims: [4]}]"
    write_config(repository / name, ensemble_config(name, steps, inputs=FOUR, outputs=outputs))


async def test_loading_an_ensemble_loads_its_step_models_and_runs_them_in_order(
    tmp_path: Path, make_manager: Factory
) -> None:
    _scales(tmp_path)
    _chain(tmp_path)
    manager = make_manager(tmp_path)
    [loaded] = await manager.load("chain")
    assert loaded.state is ModelState.READY
    assert loaded.runtime is None
    assert loaded.batcher is None
    assert {r.name for r in manager.ready()} == {"chain", "double", "triple"}
    answer = await manager.infer(InferenceRequest("chain", {"IN": X}, id="7"))
    assert answer.id == "7"
    assert answer.version == 1
    np.testing.assert_array_equal(answer.outputs["OUT"], X * 6)
    np.testing.assert_array_equal(answer.outputs["MID"], X * 2)
    stats = {r.name: r.stats for r in manager.ready()}
    assert (stats["chain"].success.count, stats["chain"].inference_count, stats["chain"].execution_count) == (1, 2, 1)
    assert (stats["double"].success.count, stats["triple"].success.count) == (2, 1)  # double runs two steps


async def test_only_the_steps_leading_to_the_outputs_asked_for_run(tmp_path: Path, make_manager: Factory) -> None:
    _scales(tmp_path)
    _chain(tmp_path)
    manager = make_manager(tmp_path)
    await manager.load("chain")
    answer = await manager.infer(InferenceRequest("chain", {"IN": X}, outputs=["MID"]))
    assert list(answer.outputs) == ["MID"]
    assert manager.get("triple").stats.success.count == 0
    assert manager.get("double").stats.success.count == 1


async def test_tensors_pass_from_step_to_step_by_reference(tmp_path: Path, make_manager: Factory) -> None:
    write_python_model(tmp_path, "identity", IDENTITY, ONE_BY_ONE)
    steps = _step("identity", "{X: IN}", "{Y: mid}") + _step("identity", "{X: mid}", "{Y: OUT}")
    config = ensemble_config("twice", steps, inputs=FOUR, outputs="[{name: OUT, datatype: FP32, dims: [4]}]")
    write_config(tmp_path / "twice", config.replace("max_batch_size: 8", "max_batch_size: 0"))
    (tmp_path / "twice" / "1").mkdir()  # an empty version folder, as Triton's ensembles have
    manager = make_manager(tmp_path)
    await manager.load("twice")
    image = np.arange(4, dtype=np.float32)
    answer = await manager.infer(InferenceRequest("twice", {"IN": image}))
    assert np.shares_memory(answer.outputs["OUT"], image)


async def test_steps_that_do_not_wait_on_each_other_run_at_the_same_time(tmp_path: Path, make_manager: Factory) -> None:
    write_python_model(tmp_path, "meets", MEETS, ONE_BY_ONE)
    steps = _step("meets", "{X: IN}", "{Y: A}") + _step("meets", "{X: IN}", "{Y: B}")
    outputs = "[{name: A, datatype: FP32, dims: [4]}, {name: B, datatype: FP32, dims: [4]}]"
    write_config(tmp_path / "both", ensemble_config("both", steps, inputs=FOUR, outputs=outputs, max_batch_size=0))
    manager = make_manager(tmp_path)
    await manager.load("both")
    image = np.arange(4, dtype=np.float32)
    answer = await asyncio.wait_for(manager.infer(InferenceRequest("both", {"IN": image})), 30)
    np.testing.assert_array_equal(answer.outputs["A"], image)
    np.testing.assert_array_equal(answer.outputs["B"], image)


async def test_a_step_failure_fails_the_request_with_the_step_named_and_its_own_kind(
    tmp_path: Path, make_manager: Factory
) -> None:
    _scales(tmp_path)
    write_python_model(tmp_path, "positive", POSITIVE, POSITIVE_CONFIG)
    steps = _step("double", "{x: IN}", "{y: doubled}") + _step("positive", "{X: doubled}", "{Y: OUT}")
    write_config(
        tmp_path / "guarded", ensemble_config("guarded", steps, inputs=FOUR, outputs=FOUR.replace("IN", "OUT"))
    )
    manager = make_manager(tmp_path)
    await manager.load("guarded")
    with pytest.raises(InvalidInput) as refused:
        await manager.infer(InferenceRequest("guarded", {"IN": X}))
    assert refused.value.message == (
        "ensemble 'guarded' step 2 (model 'positive'): model 'positive' version 1: X must not be negative"
    )
    stats = manager.get("guarded").stats
    assert (stats.fail.count, stats.success.count) == (1, 0)
    answer = await manager.infer(InferenceRequest("guarded", {"IN": np.abs(X)}))
    np.testing.assert_array_equal(answer.outputs["OUT"], np.abs(X) * 2)


async def test_a_slow_step_is_cut_off_at_the_ensembles_request_timeout(tmp_path: Path, make_manager: Factory) -> None:
    write_python_model(tmp_path, "slow", SLEEPS, sleeps_config(2.0, 1))
    one = "[{name: IN, datatype: FP32, dims: [1]}]"
    write_config(
        tmp_path / "waits",
        ensemble_config(
            "waits",
            _step("slow", "{X: IN}", "{Y: OUT}"),
            inputs=one,
            outputs=one.replace("IN", "OUT"),
            max_batch_size=0,
        ),
    )
    manager = make_manager(tmp_path, request_timeout_s=0.3)
    await manager.load("waits")
    with pytest.raises(DeadlineExceeded) as late:
        await manager.infer(InferenceRequest("waits", {"IN": np.ones(1, dtype=np.float32)}))
    assert late.value.message.startswith("ensemble 'waits' step 1 (model 'slow'): model 'slow' did not answer within")


async def test_an_ensemble_whose_step_model_is_missing_or_broken_fails_to_load_naming_the_step(
    tmp_path: Path, make_manager: Factory
) -> None:
    _scales(tmp_path)
    _chain(tmp_path, "missing", second="nowhere")
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    _chain(tmp_path, "uses_broken", second="broken")
    manager = make_manager(tmp_path)
    with pytest.raises(ModelLoadError) as missing:
        await manager.load("missing")
    assert "ensemble 'missing' step 2 (model 'nowhere') did not load: Request for unknown model: 'nowhere'" in (
        missing.value.message
    )
    assert [(r.name, r.state) for r in await manager.versions("missing")] == [("missing", ModelState.FAILED)]
    with pytest.raises(ModelLoadError) as broken:
        await manager.load("uses_broken")
    assert "ensemble 'uses_broken' step 2 (model 'broken') did not load: " in broken.value.message
    assert "model.onnx" in broken.value.message


async def test_a_step_model_whose_tensors_do_not_fit_refuses_the_ensemble_at_load(
    tmp_path: Path, make_manager: Factory
) -> None:
    _scales(tmp_path)
    write_python_model(tmp_path, "positive", POSITIVE, POSITIVE_CONFIG.replace("FP32", "FP64"))
    steps = _step("double", "{x: IN}", "{y: doubled}") + _step("positive", "{X: doubled}", "{Y: OUT}")
    write_config(tmp_path / "mixed", ensemble_config("mixed", steps, inputs=FOUR, outputs=FOUR.replace("IN", "OUT")))
    manager = make_manager(tmp_path)
    with pytest.raises(ModelLoadError) as refused:
        await manager.load("mixed")
    assert (
        "ensemble 'mixed' step 2 (model 'positive') input X FP64 [-1, 4] cannot take 'doubled' (ensemble 'mixed' "
        "step 1 (model 'double') output y FP32 [-1, 4]): the datatypes differ" in refused.value.message
    )


async def test_ensembles_calling_each_other_in_a_cycle_fail_to_load_without_waiting_on_themselves(
    tmp_path: Path, make_manager: Factory
) -> None:
    _scales(tmp_path)
    steps = _step("double", "{x: IN}", "{y: mid}") + _step("ping", "{IN: mid}", "{OUT: OUT}")
    write_config(tmp_path / "pong", ensemble_config("pong", steps, inputs=FOUR, outputs=FOUR.replace("IN", "OUT")))
    steps = _step("pong", "{IN: IN}", "{OUT: OUT}")
    write_config(tmp_path / "ping", ensemble_config("ping", steps, inputs=FOUR, outputs=FOUR.replace("IN", "OUT")))
    manager = make_manager(tmp_path)
    with pytest.raises(ModelLoadError) as refused:
        await asyncio.wait_for(manager.load("ping"), 30)
    assert "step 1 (model 'pong') did not load: " in refused.value.message
    assert "it calls ensemble 'ping' back (ping → pong → ping)" in refused.value.message


async def test_unloading_a_step_model_unloads_the_ensembles_calling_it(tmp_path: Path, make_manager: Factory) -> None:
    _scales(tmp_path)
    _chain(tmp_path)
    steps = _step("chain", "{IN: IN}", "{OUT: OUT, MID: MID}")
    outputs = "[{name: OUT, datatype: FP32, dims: [4]}, {name: MID, datatype: FP32, dims: [4]}]"
    write_config(tmp_path / "outer", ensemble_config("outer", steps, inputs=FOUR, outputs=outputs))
    manager = make_manager(tmp_path)
    await manager.load("outer")
    answer = await manager.infer(InferenceRequest("outer", {"IN": X}))
    np.testing.assert_array_equal(answer.outputs["OUT"], X * 6)
    await manager.unload("triple")
    assert {r.name for r in manager.ready()} == {"double"}
    with pytest.raises(ModelNotReady) as gone:
        await manager.infer(InferenceRequest("outer", {"IN": X}))
    assert (
        "model 'outer' version 1 is not loaded (unloaded with model 'chain', which a step calls)" in gone.value.message
    )


async def test_on_demand_a_request_loads_the_ensemble_and_its_step_models(
    tmp_path: Path, make_manager: Factory
) -> None:
    _scales(tmp_path)
    _chain(tmp_path)
    manager = make_manager(tmp_path, on_demand=True)
    answer = await manager.infer(InferenceRequest("chain", {"IN": X}))
    np.testing.assert_array_equal(answer.outputs["OUT"], X * 6)
    assert {r.name for r in manager.ready()} == {"chain", "double", "triple"}


async def test_a_step_that_raises_is_a_failure_of_the_ensemble_naming_it(tmp_path: Path, make_manager: Factory) -> None:
    write_python_model(
        tmp_path,
        "raises",
        "class TritonPythonModel:\n    def execute(self, requests):\n        raise ValueError('no')\n",
        ONE_BY_ONE,
    )
    write_config(
        tmp_path / "fails",
        ensemble_config(
            "fails",
            _step("raises", "{X: IN}", "{Y: OUT}"),
            inputs=FOUR,
            outputs=FOUR.replace("IN", "OUT"),
            max_batch_size=0,
        ),
    )
    manager = make_manager(tmp_path)
    await manager.load("fails")
    with pytest.raises(InferenceFailed) as failed:
        await manager.infer(InferenceRequest("fails", {"IN": np.zeros(4, dtype=np.float32)}))
    assert failed.value.message.startswith(
        "ensemble 'fails' step 1 (model 'raises'): model 'raises' version 1: execute raised ValueError"
    )
    assert manager.get("fails").stats.model_failures == 1

"""An ensemble's plan as plain logic: the graph config.yaml's steps describe, refused with the step and the
tensor named where it could not run, checked against the step models' specs, and pruned to what a
request asks for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelserve.errors import InferenceFailed, InvalidInput, ModelLoadError, ModelNotFound, ModelNotReady, classify
from modelserve.models.ensemble import EnsemblePlan, Reshape, calls_back, ensemble_plan
from modelserve.models.ensemble_run import in_step
from modelserve.models.spec import ModelSpec
from modelserve.repository.config import ModelConfig, Platform
from modelserve.types import TensorSpec


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> dict[str, Any]:
    return {"model_name": model, "model_version": version, "input_map": inputs, "output_map": outputs}


def _config(
    *steps: dict[str, Any], inputs: tuple[str, ...] = ("IN",), outputs: tuple[str, ...] = ("OUT",), **more: Any
) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "platform": "ensemble",
            "max_batch_size": 8,
            "inputs": [{"name": n, "datatype": "FP32", "dims": [4]} for n in inputs],
            "outputs": [{"name": n, "datatype": "FP32", "dims": [4]} for n in outputs],
            "ensemble_scheduling": {"step": list(steps)},
            **more,
        }
    )


def _refused(config: ModelConfig) -> str:
    with pytest.raises(ModelLoadError) as refused:
        ensemble_plan("pipe", config)
    return refused.value.message


# A diamond: IN → a → (b, c) → d → OUT, listed out of order.
DIAMOND = (
    _step("join", {"left": "b_out", "right": "c_out"}, {"y": "OUT"}),
    _step("left", {"x": "a_out"}, {"y": "b_out"}),
    _step("first", {"x": "IN"}, {"y": "a_out"}),
    _step("right", {"x": "a_out"}, {"y": "c_out"}),
)


def test_steps_run_after_the_steps_whose_outputs_they_read_whatever_their_order_in_config() -> None:
    plan = ensemble_plan("pipe", _config(*DIAMOND))
    assert [step.model for step in plan.steps] == ["first", "left", "right", "join"]
    assert [step.number for step in plan.steps] == [3, 2, 4, 1]  # messages name config.yaml's numbers
    assert plan.models == {"first", "left", "right", "join"}


def test_a_step_reading_a_tensor_nothing_writes_is_refused_naming_step_and_tensor() -> None:
    message = _refused(_config(_step("m", {"x": "INN"}, {"y": "OUT"})))
    assert message == (
        "ensemble 'pipe' step 1 (model 'm'): input 'x' reads 'INN', which is neither an input of the ensemble "
        "nor any step's output"
    )


def test_a_tensor_written_by_two_steps_is_refused() -> None:
    message = _refused(_config(_step("a", {"x": "IN"}, {"y": "OUT"}), _step("b", {"x": "IN"}, {"y": "OUT"})))
    assert message == (
        "ensemble 'pipe': 'OUT' is written by both step 1 (model 'a') output 'y' and step 2 (model 'b') output 'y'"
    )


def test_an_output_no_step_writes_is_refused() -> None:
    message = _refused(_config(_step("a", {"x": "IN"}, {"y": "OUT"}), outputs=("OUT", "EXTRA")))
    assert message == "ensemble 'pipe': no step writes its output 'EXTRA'; map a step's output to it"


def test_an_input_no_step_reads_is_refused() -> None:
    message = _refused(_config(_step("a", {"x": "IN"}, {"y": "OUT"}), inputs=("IN", "SPARE")))
    assert message == "ensemble 'pipe': no step reads its input 'SPARE'; map it in a step's input_map"


def test_a_step_writing_over_an_ensemble_input_is_refused() -> None:
    message = _refused(_config(_step("a", {"x": "IN"}, {"y": "OUT", "z": "IN"})))
    assert message == "ensemble 'pipe': step 1 (model 'a') output 'z' is mapped to 'IN', an input of the ensemble"


def test_steps_waiting_on_each_other_are_a_cycle() -> None:
    config = _config(
        _step("a", {"x": "IN", "back": "b_out"}, {"y": "a_out"}),
        _step("b", {"x": "a_out"}, {"y": "b_out"}),
        _step("c", {"x": "IN"}, {"y": "OUT"}),
    )
    message = _refused(config)
    assert message.startswith("ensemble 'pipe': step 1 (model 'a'), step 2 (model 'b') wait on each other's outputs")


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("instance_count", 2, "instance_count is not for an ensemble"),
        ("dynamic_batching", {"max_queue_delay_ms": 1}, "dynamic_batching is not for an ensemble"),
        ("warmup", {"count": 1}, "warmup is not for an ensemble"),
        ("response_cache", {"enable": True}, "response_cache is not served for an ensemble"),
    ],
)
def test_what_belongs_to_the_step_models_is_refused_on_the_ensemble(field: str, value: Any, why: str) -> None:
    assert why in _refused(_config(_step("a", {"x": "IN"}, {"y": "OUT"}), **{field: value}))


def test_an_ensemble_without_steps_is_refused() -> None:
    config = ModelConfig.model_validate({"platform": "ensemble", "inputs": [], "outputs": []})
    assert (
        _refused(config) == "ensemble 'pipe': config.yaml has no ensemble_scheduling; list the ensemble's steps there"
    )


def test_an_ensemble_must_declare_its_tensors() -> None:
    config = ModelConfig.model_validate(
        {"platform": "ensemble", "ensemble_scheduling": {"step": [_step("a", {"x": "IN"}, {"y": "OUT"})]}}
    )
    assert "declare its inputs and outputs in config.yaml" in _refused(config)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (
            {"platform": "onnx", "ensemble_scheduling": {"step": [_step("a", {"x": "IN"}, {"y": "OUT"})]}},
            "ensemble_scheduling is for platform ensemble; set platform: ensemble or remove it",
        ),
        ({"platform": "ensemble", "ensemble_scheduling": {"step": []}}, "ensemble_scheduling.step"),
        (
            {"platform": "ensemble", "ensemble_scheduling": {"step": [_step("a", {"x": "IN"}, {"y": "OUT"}, 0)]}},
            "model_version 0 must be -1 (the latest) or a version number",
        ),
        (
            {"platform": "ensemble", "ensemble_scheduling": {"step": [_step("a", {}, {"y": "OUT"})]}},
            "ensemble_scheduling.step.0.input_map",
        ),
    ],
)
def test_config_yaml_refuses_malformed_steps(fields: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match="validation error") as refused:
        ModelConfig.model_validate(fields)
    assert why in str(refused.value)


def test_a_request_runs_only_the_steps_its_outputs_need_and_steps_whose_outputs_go_nowhere() -> None:
    config = _config(
        _step("scale", {"x": "IN"}, {"y": "scaled"}),
        _step("to_a", {"x": "scaled"}, {"y": "A"}),
        _step("to_b", {"x": "IN"}, {"y": "B"}),
        _step("audit", {"x": "IN"}, {"y": "audited"}),  # read by no step and not an output: always runs
        outputs=("A", "B"),
    )
    plan = ensemble_plan("pipe", config)
    assert [s.model for s in plan.needed(["A", "B"])] == ["scale", "to_b", "audit", "to_a"]
    assert [s.model for s in plan.needed(["B"])] == ["to_b", "audit"]
    assert [s.model for s in plan.needed(["A"])] == ["scale", "audit", "to_a"]


def _spec(
    name: str,
    max_batch_size: int,
    inputs: dict[str, tuple[str, tuple[int, ...]]],
    outputs: dict[str, tuple[str, tuple[int, ...]]],
) -> ModelSpec:
    prefix = (-1,) if max_batch_size else ()
    return ModelSpec(
        name=name,
        version=1,
        platform=Platform.ONNX,
        max_batch_size=max_batch_size,
        inputs=tuple(TensorSpec(n, d, (*prefix, *s)) for n, (d, s) in inputs.items()),
        outputs=tuple(TensorSpec(n, d, (*prefix, *s)) for n, (d, s) in outputs.items()),
        max_queue_delay_ms=0.0,
        preferred_batch_sizes=(),
        max_queue_size=0,
        instance_count=1,
    )


ENSEMBLE = _spec("pipe", 8, {"IN": ("FP32", (4,))}, {"OUT": ("FP32", (4,))})
CHAIN = _config(_step("a", {"x": "IN"}, {"y": "mid"}), _step("b", {"x": "mid"}, {"y": "OUT"}))


def _bound(a: ModelSpec, b: ModelSpec, ensemble: ModelSpec = ENSEMBLE) -> EnsemblePlan:
    return ensemble_plan("pipe", CHAIN).bind(ensemble, {1: a, 2: b})


def _bind_refused(a: ModelSpec, b: ModelSpec, ensemble: ModelSpec = ENSEMBLE) -> str:
    with pytest.raises(ModelLoadError) as refused:
        _bound(a, b, ensemble)
    return refused.value.message


FOUR = {"x": ("FP32", (4,))}, {"y": ("FP32", (4,))}


def test_a_chain_of_agreeing_models_binds_with_nothing_reshaped() -> None:
    plan = _bound(_spec("a", 8, *FOUR), _spec("b", 16, *FOUR))
    assert [feed.reshape for step in plan.steps for feed in step.feeds] == [Reshape.NONE, Reshape.NONE]
    assert plan.steps[1].feeds[0].shape == (-1, 4)


def test_a_datatype_the_next_model_does_not_take_is_refused_naming_both_ends() -> None:
    message = _bind_refused(_spec("a", 8, FOUR[0], {"y": ("INT64", (4,))}), _spec("b", 8, *FOUR))
    assert message == (
        "ensemble 'pipe' step 2 (model 'b') input x FP32 [-1, 4] cannot take 'mid' (ensemble 'pipe' step 1 "
        "(model 'a') output y INT64 [-1, 4]): the datatypes differ"
    )


def test_a_shape_the_next_model_does_not_take_is_refused() -> None:
    message = _bind_refused(_spec("a", 8, FOUR[0], {"y": ("FP32", (5,))}), _spec("b", 8, *FOUR))
    assert "step 2 (model 'b') input x FP32 [-1, 4] cannot take 'mid'" in message
    assert message.endswith("the shapes differ (-1: any size)")


def test_an_ensemble_output_is_checked_against_the_step_writing_it() -> None:
    message = _bind_refused(_spec("a", 8, *FOUR), _spec("b", 8, FOUR[0], {"y": ("FP16", (4,))}))
    assert message.startswith("ensemble 'pipe' output OUT FP32 [-1, 4] cannot take 'OUT' (ensemble 'pipe' step 2")


def test_inputs_and_outputs_the_step_model_lacks_or_leaves_unmapped_are_refused() -> None:
    unknown = _bind_refused(_spec("a", 8, {"z": ("FP32", (4,))}, FOUR[1]), _spec("b", 8, *FOUR))
    assert "step 1 (model 'a'): input_map leaves out the model's input z FP32 [-1, 4]" in unknown
    two = _spec("a", 8, {"x": ("FP32", (4,)), "w": ("FP32", (4,))}, FOUR[1])
    assert "input_map leaves out the model's input w FP32 [-1, 4]" in _bind_refused(two, _spec("b", 8, *FOUR))
    renamed = _bind_refused(_spec("a", 8, FOUR[0], {"out": ("FP32", (4,))}), _spec("b", 8, *FOUR))
    assert renamed == (
        "ensemble 'pipe' step 1 (model 'a'): output_map names output 'y', which the model does not have; its "
        "outputs are out FP32 [-1, 4]"
    )


def test_an_ensemble_may_not_batch_more_than_a_step_model_does() -> None:
    message = _bind_refused(_spec("a", 4, *FOUR), _spec("b", 8, *FOUR))
    assert message == (
        "ensemble 'pipe' takes batches of up to 8 (its max_batch_size), but its step 1 (model 'a') takes up to 4; "
        "lower the ensemble's max_batch_size or raise the model's"
    )


def test_between_batching_and_non_batching_models_the_batch_axis_is_added_or_dropped_as_a_view() -> None:
    unbatched = _spec("pipe", 0, {"IN": ("FP32", (4,))}, {"OUT": ("FP32", (4,))})
    plan = _bound(_spec("a", 8, *FOUR), _spec("b", 0, *FOUR), unbatched)
    added, dropped = plan.steps[0].feeds[0], plan.steps[1].feeds[0]
    assert (added.reshape, dropped.reshape) == (Reshape.ADD_BATCH, Reshape.DROP_BATCH)
    array = np.arange(4, dtype=np.float32)
    into_a = added.take({"IN": array})
    assert into_a.shape == (1, 4)
    assert np.shares_memory(into_a, array)
    out_of_a = into_a * 2
    into_b = dropped.take({"mid": out_of_a})
    assert into_b.shape == (4,)
    assert np.shares_memory(into_b, out_of_a)
    assert dropped.take({"mid": array}) is array  # already what b takes


def test_calls_back_finds_the_steps_through_which_an_ensemble_would_call_itself() -> None:
    steps = {"outer": ["pre", "inner"], "inner": ["model", "outer"], "pre": [], "model": []}
    assert calls_back("outer", steps["outer"], lambda name: steps[name]) == {
        "inner": "it calls ensemble 'outer' back (outer → inner → outer)"
    }
    assert calls_back("alone", ["alone"], lambda name: []) == {
        "alone": "it calls ensemble 'alone' back (alone → alone)"
    }
    assert calls_back("outer", ["pre"], lambda name: steps[name]) == {}


def test_a_step_failure_keeps_its_kind_and_names_the_step() -> None:
    where = "ensemble 'pipe' step 2 (model 'b')"
    invalid = in_step(where, InvalidInput("input 'x' has shape [3]"))
    assert type(invalid) is InvalidInput
    assert invalid.message == str(invalid) == "ensemble 'pipe' step 2 (model 'b'): input 'x' has shape [3]"
    assert classify(in_step(where, InferenceFailed("boom"))).http_status == 500
    missing = in_step(where, ModelNotFound.unknown("b"))
    assert type(missing) is ModelNotReady  # the ensemble exists: it is not ready, not unknown
    assert classify(missing).http_status == 503

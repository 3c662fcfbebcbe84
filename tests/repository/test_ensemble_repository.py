"""Ensembles in the repository: config.yaml's ensemble_scheduling, a version folder that may be empty or
absent, and Triton's JSON configuration of an ensemble as a load parameter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelserve.errors import InvalidInput, ModelLoadError
from modelserve.repository.config import Platform
from modelserve.repository.layout import read_source
from modelserve.repository.overrides import from_triton
from modelserve.repository.scheduling import EnsembleStep
from tests.builders import write_config

ENSEMBLE = """platform: ensemble
max_batch_size: 4
inputs: [{name: IN, datatype: FP32, dims: [4]}]
outputs: [{name: OUT, datatype: FP32, dims: [4]}]
ensemble_scheduling:
  step:
    - model_name: scale
      model_version: 2
      input_map: {x: IN}
      output_map: {y: OUT}
"""


def test_an_ensemble_without_a_version_folder_is_version_1(tmp_path: Path) -> None:
    write_config(tmp_path / "pipe", ENSEMBLE)
    source = read_source("pipe", tmp_path / "pipe")
    assert source.platform is Platform.ENSEMBLE
    assert source.files == {1: tmp_path / "pipe" / "1"}
    assert source.selected_versions() == [1]
    scheduling = source.config.ensemble_scheduling
    assert scheduling is not None
    assert scheduling.step == [
        EnsembleStep(model_name="scale", model_version=2, input_map={"x": "IN"}, output_map={"y": "OUT"})
    ]


def test_an_ensembles_empty_version_folders_are_its_versions(tmp_path: Path) -> None:
    write_config(tmp_path / "pipe", ENSEMBLE.replace("platform: ensemble", "platform: ensemble\nversion_policy: all"))
    (tmp_path / "pipe" / "1").mkdir()
    (tmp_path / "pipe" / "3").mkdir()
    source = read_source("pipe", tmp_path / "pipe")
    assert source.files == {1: tmp_path / "pipe" / "1", 3: tmp_path / "pipe" / "3"}
    assert source.selected_versions() == [1, 3]


def test_other_models_still_need_a_version_folder(tmp_path: Path) -> None:
    write_config(tmp_path / "plain", "platform: onnx\n")
    with pytest.raises(ModelLoadError, match="no version folders"):
        read_source("plain", tmp_path / "plain")


def test_ensemble_scheduling_needs_platform_ensemble_in_config_yaml(tmp_path: Path) -> None:
    write_config(tmp_path / "pipe", ENSEMBLE.replace("platform: ensemble", "platform: onnx"))
    with pytest.raises(ModelLoadError) as refused:
        read_source("pipe", tmp_path / "pipe")
    assert "ensemble_scheduling is for platform ensemble; set platform: ensemble or remove it" in refused.value.message
    assert str(tmp_path / "pipe" / "config.yaml") in refused.value.message


def test_tritons_json_of_an_ensemble_is_read_with_its_steps() -> None:
    document = {
        "name": "pipe",
        "platform": "ensemble",
        "max_batch_size": 4,
        "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "ensemble_scheduling": {
            "step": [
                {"model_name": "scale", "model_version": "-1", "input_map": {"x": "IN"}, "output_map": {"y": "OUT"}}
            ]
        },
    }
    config = from_triton("pipe", json.dumps(document))
    assert config.platform is Platform.ENSEMBLE
    assert config.ensemble_scheduling is not None
    [step] = config.ensemble_scheduling.step
    assert (step.model_name, step.model_version, step.input_map, step.output_map) == (
        "scale",
        -1,
        {"x": "IN"},
        {"y": "OUT"},
    )


def test_tritons_json_of_an_ensemble_with_a_bad_step_is_refused_naming_the_field() -> None:
    document = {
        "platform": "ensemble",
        "ensemble_scheduling": {"step": [{"model_name": "scale", "model_version": "x"}]},
    }
    with pytest.raises(InvalidInput) as refused:
        from_triton("pipe", json.dumps(document))
    assert refused.value.message == (
        "failed to load 'pipe': the config parameter is not a valid model configuration: "
        "ensemble_scheduling.step.model_version: 'x' is not a whole number"
    )

"""config.yaml: parsing, version policies, and errors that name the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig, Platform, TensorConfig, VersionPolicy
from tests.builders import write_config

FULL_CONFIG = """\
name: resnet
platform: onnx
max_batch_size: 16
inputs:
  - name: image
    datatype: FP32
    dims: [3, -1, -1]
  - name: scale
    datatype: FP64
    dims: [1]
outputs:
  - name: scores
    datatype: FP32
    dims: [1000]
dynamic_batching:
  max_queue_delay_ms: 2.5
  preferred_batch_sizes: [8, 4, 8]
  max_queue_size: 100
version_policy:
  specific: [1, 3]
instance_count: 2
parameters:
  intra_op_num_threads: 4
  device: cpu
"""


def _parse(tmp_path: Path, text: str) -> ModelConfig:
    return ModelConfig.from_file(write_config(tmp_path / "model", text))


def _error(tmp_path: Path, text: str) -> str:
    path = write_config(tmp_path / "model", text)
    with pytest.raises(ModelLoadError) as caught:
        ModelConfig.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_full_config_parses_every_field(tmp_path: Path) -> None:
    config = _parse(tmp_path, FULL_CONFIG)
    assert config.name == "resnet"
    assert config.platform is Platform.ONNX
    assert config.max_batch_size == 16
    assert config.inputs == [
        TensorConfig(name="image", datatype="FP32", dims=[3, -1, -1]),
        TensorConfig(name="scale", datatype="FP64", dims=[1]),
    ]
    assert config.outputs == [TensorConfig(name="scores", datatype="FP32", dims=[1000])]
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.max_queue_delay_ms == 2.5
    assert config.dynamic_batching.preferred_batch_sizes == [4, 8]
    assert config.dynamic_batching.max_queue_size == 100
    assert config.version_policy == VersionPolicy(specific=[1, 3])
    assert config.instance_count == 2
    assert config.parameters == {"intra_op_num_threads": 4, "device": "cpu"}


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = _parse(tmp_path, "# nothing set\n")
    assert config == ModelConfig()
    assert config.name is None
    assert config.platform is None
    assert config.max_batch_size is None
    assert config.inputs == []
    assert config.outputs == []
    assert config.dynamic_batching is None
    assert config.version_policy == VersionPolicy(latest=1)
    assert config.instance_count == 1
    assert config.parameters == {}


@pytest.mark.parametrize("platform", list(Platform))
def test_every_platform_is_accepted(tmp_path: Path, platform: Platform) -> None:
    assert _parse(tmp_path, f"platform: {platform.value}\n").platform is platform


def test_platform_filenames() -> None:
    assert Platform.ONNX.filenames == ("model.onnx",)
    assert Platform.TORCHSCRIPT.filenames == ("model.pt",)
    assert Platform.SKLEARN.filenames == ("model.joblib",)
    assert Platform.TENSORRT.filenames == ("model.plan", "model.trt")


def test_dynamic_batching_fields_are_optional(tmp_path: Path) -> None:
    config = _parse(tmp_path, "dynamic_batching: {}\n")
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.max_queue_delay_ms is None
    assert config.dynamic_batching.preferred_batch_sizes == []
    assert config.dynamic_batching.max_queue_size is None


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("{latest: 2}", VersionPolicy(latest=2)),
        ("all", VersionPolicy(all=True)),
        ("{all: true}", VersionPolicy(all=True)),
        ("{specific: [1, 3]}", VersionPolicy(specific=[1, 3])),
        ("{latest: {num_versions: 2}}", VersionPolicy(latest=2)),
        ("{latest: {}}", VersionPolicy(latest=1)),
        ("{specific: {versions: [1, 3]}}", VersionPolicy(specific=[1, 3])),
        ("{all: {}}", VersionPolicy(all=True)),
    ],
)
def test_version_policy_forms(tmp_path: Path, policy: str, expected: VersionPolicy) -> None:
    assert _parse(tmp_path, f"version_policy: {policy}\n").version_policy == expected


@pytest.mark.parametrize(
    ("policy", "available", "selected"),
    [
        (VersionPolicy(latest=1), [3, 1, 2], [3]),
        (VersionPolicy(latest=2), [1, 5, 3, 2], [3, 5]),
        (VersionPolicy(latest=9), [2, 1], [1, 2]),
        (VersionPolicy(all=True), [3, 1, 2], [1, 2, 3]),
        (VersionPolicy(specific=[1, 3]), [4, 3, 2, 1], [1, 3]),
        (VersionPolicy(specific=[1, 7]), [1, 2], [1]),
        (VersionPolicy(specific=[7]), [1, 2], []),
        (VersionPolicy(latest=1), [], []),
    ],
)
def test_version_policy_select(policy: VersionPolicy, available: list[int], selected: list[int]) -> None:
    assert policy.select(available) == selected


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    message = _error(tmp_path, "platform: onnx\ninputs: [unclosed\n")
    assert "invalid YAML" in message
    assert "line" in message


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "config.yaml"
    with pytest.raises(ModelLoadError, match="cannot read") as caught:
        ModelConfig.from_file(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("platform: onnx\nmax_batch_sise: 4\n", "max_batch_sise"),
        ("dynamic_batching: {max_queue_dely_ms: 3}\n", "dynamic_batching.max_queue_dely_ms"),
        ("inputs:\n  - {name: x, datatype: FP32, dims: [1], shape: [1]}\n", "inputs.0.shape"),
        (
            "outputs:\n  - {name: y, datatype: FP32, dims: [1]}\n  - {name: z, data_type: FP32, dims: [1]}\n",
            "outputs.1.data_type",
        ),
        ("version_policy: {latest: 1, newest: 2}\n", "version_policy.newest"),
    ],
)
def test_unknown_field_is_named_with_its_path(tmp_path: Path, text: str, where: str) -> None:
    assert f"{where}: unknown field" in _error(tmp_path, text)


@pytest.mark.parametrize("datatype", ["FLOAT32", "fp32", "TYPE_FP32", "STRING"])
def test_bad_datatype(tmp_path: Path, datatype: str) -> None:
    message = _error(tmp_path, f"inputs:\n  - {{name: x, datatype: {datatype}, dims: [4]}}\n")
    assert "inputs.0.datatype" in message
    assert f"unknown datatype '{datatype}'" in message
    assert "FP32" in message


@pytest.mark.parametrize("dims", ["[0]", "[4, -2]", "[-3]", "[2, 0, 2]"])
def test_dims_must_be_positive_or_minus_one(tmp_path: Path, dims: str) -> None:
    message = _error(tmp_path, f"outputs:\n  - {{name: y, datatype: FP32, dims: {dims}}}\n")
    assert "outputs.0.dims" in message
    assert "must be positive sizes or -1" in message


def test_minus_one_dims_are_accepted(tmp_path: Path) -> None:
    config = _parse(tmp_path, "inputs:\n  - {name: x, datatype: FP32, dims: [-1, 3]}\n")
    assert config.inputs[0].dims == [-1, 3]


@pytest.mark.parametrize("kind", ["inputs", "outputs"])
def test_duplicate_tensor_names(tmp_path: Path, kind: str) -> None:
    text = (
        f"{kind}:\n"
        "  - {name: a, datatype: FP32, dims: [1]}\n"
        "  - {name: b, datatype: FP32, dims: [1]}\n"
        "  - {name: a, datatype: INT32, dims: [2]}\n"
    )
    message = _error(tmp_path, text)
    assert f"{kind}: " in message
    assert "repeated: a" in message


def test_empty_tensor_name_is_refused(tmp_path: Path) -> None:
    assert "inputs.0.name" in _error(tmp_path, "inputs:\n  - {name: '', datatype: FP32, dims: [1]}\n")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    assert f"expected a mapping of fields, got {kind}" in _error(tmp_path, text)


@pytest.mark.parametrize("sizes", ["[0, 4]", "[-2]", "[4, 8, 0]"])
def test_preferred_batch_sizes_must_be_positive(tmp_path: Path, sizes: str) -> None:
    message = _error(tmp_path, f"dynamic_batching: {{preferred_batch_sizes: {sizes}}}\n")
    assert "dynamic_batching.preferred_batch_sizes" in message
    assert "must be positive" in message


@pytest.mark.parametrize(
    "policy",
    ["{latest: 1, all: {}}", "{latest: 2, specific: [1]}", "{all: true, specific: {versions: [1]}}", "{}"],
)
def test_exactly_one_version_policy(tmp_path: Path, policy: str) -> None:
    message = _error(tmp_path, f"version_policy: {policy}\n")
    assert "version_policy" in message
    assert "set exactly one of latest, all or specific" in message


@pytest.mark.parametrize("policy", ["{specific: []}", "{specific: [0, 1]}", "{specific: {versions: []}}"])
def test_specific_versions_must_be_positive_and_present(tmp_path: Path, policy: str) -> None:
    assert "non-empty list of positive integers" in _error(tmp_path, f"version_policy: {policy}\n")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version_policy: {latest: 0}\n", "version_policy.latest"),
        ("max_batch_size: -1\n", "max_batch_size"),
        ("instance_count: 0\n", "instance_count"),
        ("dynamic_batching: {max_queue_delay_ms: -1}\n", "dynamic_batching.max_queue_delay_ms"),
        ("dynamic_batching: {max_queue_size: -1}\n", "dynamic_batching.max_queue_size"),
        ("platform: tensorflow\n", "platform"),
        ("max_batch_size: many\n", "max_batch_size"),
    ],
)
def test_out_of_range_values_name_the_field(tmp_path: Path, text: str, where: str) -> None:
    assert f"{where}: " in _error(tmp_path, text)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    message = _error(tmp_path, "max_batch_sise: 4\ninstance_count: 0\n")
    assert "max_batch_sise: unknown field" in message
    assert "instance_count: " in message


@pytest.mark.parametrize(
    ("batching", "words"),
    [
        ("{priority_levels: 2, default_priority_level: 3}", "default_priority_level 3 is not among priority_levels"),
        ("{priority_levels: 2, priority_queue_policy: {3: {max_queue_size: 1}}}", "levels [3] outside priority_levels"),
        ("{default_queue_policy: {timeout_action: DROP}}", "timeout_action"),
    ],
)
def test_priority_levels_and_queue_policies_must_agree(tmp_path: Path, batching: str, words: str) -> None:
    assert words in _error(tmp_path, f"dynamic_batching: {batching}\n")

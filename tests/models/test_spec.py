"""A model version's spec: config.yaml merged with what the real model file says, and request checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelserve.batching.priority import QueuePolicy
from modelserve.cpus import available_cpus
from modelserve.errors import InvalidInput, ModelLoadError
from modelserve.models.spec import BatchingDefaults, ModelSpec, resolve
from modelserve.repository.config import ModelConfig, Platform
from modelserve.repository.layout import ModelRepository
from modelserve.runtimes.base import runtime_class
from modelserve.runtimes.onnx import OnnxRuntime
from modelserve.types import TensorSpec
from tests.builders import add_sub_onnx, broken_repository, scale_onnx, write_config

DEFAULTS = BatchingDefaults(max_batch_size=16, max_queue_delay_ms=1.5, max_queue_size=99)


def _strings_onnx(path: Path) -> Path:
    """``out = Identity(text)`` on a STRING [batch] tensor."""
    x = helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])
    y = helper.make_tensor_value_info("out", TensorProto.STRING, ["batch"])
    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["out"])], "strings", [x], [y])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def _resolve(model_file: Path, config_text: str | None = None, defaults: BatchingDefaults = DEFAULTS) -> ModelSpec:
    """Resolve an ONNX file in ``<model>/1/`` against the config.yaml beside its version folder."""
    model_dir = model_file.parent.parent
    config = ModelConfig()
    if config_text is not None:
        config = ModelConfig.from_file(write_config(model_dir, config_text))
    runtime = OnnxRuntime(model_file, config)
    try:
        signature = runtime.load()
    finally:
        runtime.unload()
    return resolve(model_dir.name, 1, Platform.ONNX, config, signature, defaults, model_file)


def _load_error(model_file: Path, config_text: str, defaults: BatchingDefaults = DEFAULTS) -> str:
    with pytest.raises(ModelLoadError) as caught:
        _resolve(model_file, config_text, defaults)
    message = str(caught.value)
    assert message.startswith(f"{model_file.parent.parent / 'config.yaml'}: "), message
    assert str(model_file) in message
    return message


def _add_sub(tmp_path: Path, **kwargs: object) -> Path:
    return add_sub_onnx(tmp_path / "simple" / "1" / "model.onnx", **kwargs)  # type: ignore[arg-type]


def _scale(tmp_path: Path, **kwargs: object) -> Path:
    return scale_onnx(tmp_path / "scale" / "1" / "model.onnx", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def simple(built_repository: Path) -> ModelSpec:
    """The example `simple` model: INT32 INPUT0/INPUT1 [-1, 16], max_batch_size 8, from config and file."""
    source = ModelRepository(built_repository).source("simple")
    runtime = runtime_class(source.platform)(source.files[1], source.config)
    signature = runtime.load()
    runtime.unload()
    return resolve("simple", 1, source.platform, source.config, signature, DEFAULTS, source.files[1])


# -- resolve: config absent --------------------------------------------------------------------------


def test_no_config_takes_everything_from_a_batched_file(built_repository: Path) -> None:
    spec = _resolve(built_repository / "mlp" / "1" / "model.onnx")
    assert spec == ModelSpec(
        name="mlp",
        version=1,
        platform=Platform.ONNX,
        max_batch_size=16,
        inputs=(TensorSpec("input", "FP32", (-1, 16)),),
        outputs=(TensorSpec("output", "FP32", (-1, 4)),),
        max_queue_delay_ms=1.5,
        preferred_batch_sizes=(),
        max_queue_size=99,
        instance_count=available_cpus(),  # an ONNX model on the CPU: one per CPU
        parameters={},
    )
    assert spec.output_names == ["output"]


def test_no_config_on_an_unbatched_file(tmp_path: Path) -> None:
    spec = _resolve(_scale(tmp_path, batch=2))
    assert spec.max_batch_size == 0
    assert spec.inputs == (TensorSpec("x", "FP32", (2, 4)),)
    assert spec.outputs == (TensorSpec("y", "FP32", (2, 4)),)


def test_no_config_with_batching_disabled_by_default(built_repository: Path) -> None:
    spec = _resolve(built_repository / "mlp" / "1" / "model.onnx", defaults=BatchingDefaults(max_batch_size=0))
    assert spec.max_batch_size == 0
    assert spec.inputs == (TensorSpec("input", "FP32", (-1, 16)),)


def test_default_batching_defaults() -> None:
    assert BatchingDefaults() == BatchingDefaults(max_batch_size=32, max_queue_delay_ms=0.0, max_queue_size=2048)


# -- resolve: config agreeing with the file --------------------------------------------------------


def test_example_simple_config_agrees_with_its_file(simple: ModelSpec) -> None:
    assert simple.max_batch_size == 8
    assert simple.inputs == (TensorSpec("INPUT0", "INT32", (-1, 16)), TensorSpec("INPUT1", "INT32", (-1, 16)))
    assert simple.output_names == ["OUTPUT0", "OUTPUT1"]


def test_config_minus_one_against_a_fixed_file_dim_is_accepted(tmp_path: Path) -> None:
    spec = _resolve(_scale(tmp_path), "max_batch_size: 4\ninputs:\n  - {name: x, datatype: FP32, dims: [-1]}\n")
    assert spec.max_batch_size == 4
    assert [s.name for s in spec.inputs] == ["x"]
    assert spec.inputs[0].shape[0] == -1


def test_config_minus_one_keeps_the_file_fixed_size(tmp_path: Path) -> None:
    """The file still needs 4 features, so a request with 5 must fail validation, not in the runtime."""
    spec = _resolve(_scale(tmp_path), "max_batch_size: 4\ninputs:\n  - {name: x, datatype: FP32, dims: [-1]}\n")
    assert spec.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    with pytest.raises(InvalidInput, match=r"has shape \[2, 5\]"):
        spec.validate({"x": np.zeros((2, 5), dtype=np.float32)})


def test_config_fixed_dim_against_a_symbolic_file_dim(tmp_path: Path) -> None:
    config = (
        "max_batch_size: 8\ninputs:\n"
        "  - {name: INPUT0, datatype: INT32, dims: [16]}\n"
        "  - {name: INPUT1, datatype: INT32, dims: [16]}\n"
    )
    spec = _resolve(_add_sub(tmp_path, dims=("batch", "width")), config)
    assert spec.inputs == (TensorSpec("INPUT0", "INT32", (-1, 16)), TensorSpec("INPUT1", "INT32", (-1, 16)))
    assert spec.outputs == (TensorSpec("OUTPUT0", "INT32", (-1, -1)), TensorSpec("OUTPUT1", "INT32", (-1, -1)))
    with pytest.raises(InvalidInput, match="INPUT0"):
        spec.validate({"INPUT0": np.zeros((1, 5), np.int32), "INPUT1": np.zeros((1, 5), np.int32)})


def test_max_batch_size_zero_takes_full_dims(tmp_path: Path) -> None:
    config = (
        "max_batch_size: 0\ninputs:\n"
        "  - {name: INPUT0, datatype: INT32, dims: [-1, 16]}\n"
        "  - {name: INPUT1, datatype: INT32, dims: [-1, 16]}\n"
    )
    spec = _resolve(_add_sub(tmp_path), config)
    assert spec.max_batch_size == 0
    assert spec.inputs[0] == TensorSpec("INPUT0", "INT32", (-1, 16))
    assert spec.validate({"INPUT0": np.zeros((40, 16), np.int32), "INPUT1": np.zeros((40, 16), np.int32)}) == 1


def test_outputs_from_the_file_when_config_declares_only_inputs(tmp_path: Path) -> None:
    spec = _resolve(_scale(tmp_path), "inputs:\n  - {name: x, datatype: FP32, dims: [4]}\n")
    assert spec.max_batch_size == 16
    assert spec.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    assert spec.outputs == (TensorSpec("y", "FP32", (-1, 4)),)


def test_config_may_declare_a_subset_of_the_outputs(tmp_path: Path) -> None:
    spec = _resolve(_add_sub(tmp_path), "outputs:\n  - {name: OUTPUT1, datatype: INT32, dims: [16]}\n")
    assert spec.output_names == ["OUTPUT1"]
    assert [s.name for s in spec.inputs] == ["INPUT0", "INPUT1"]


# -- resolve: contradictions -----------------------------------------------------------------------


@pytest.mark.parametrize(("dims", "described"), [("[5]", "[-1, 5]"), ("[4, 1]", "[-1, 4, 1]"), ("[]", "[-1]")])
def test_wrong_dims(tmp_path: Path, dims: str, described: str) -> None:
    message = _load_error(_scale(tmp_path), f"inputs:\n  - {{name: x, datatype: FP32, dims: {dims}}}\n")
    assert f"input x FP32 {described} contradicts" in message
    assert "which has x FP32 [-1, 4]" in message


def test_wrong_output_dims(tmp_path: Path) -> None:
    message = _load_error(_scale(tmp_path), "outputs:\n  - {name: y, datatype: FP32, dims: [3]}\n")
    assert "output y FP32 [-1, 3] contradicts" in message
    assert "which has y FP32 [-1, 4]" in message


def test_wrong_datatype(tmp_path: Path) -> None:
    message = _load_error(_scale(tmp_path), "inputs:\n  - {name: x, datatype: FP64, dims: [4]}\n")
    assert "input x FP64 [-1, 4] contradicts" in message
    assert "which has x FP32 [-1, 4]" in message


def test_unknown_input_name(tmp_path: Path) -> None:
    message = _load_error(_scale(tmp_path), "inputs:\n  - {name: image, datatype: FP32, dims: [4]}\n")
    assert "declares input 'image'" in message
    assert "has inputs x FP32 [-1, 4]" in message


def test_unknown_output_name(tmp_path: Path) -> None:
    message = _load_error(_add_sub(tmp_path), "outputs:\n  - {name: OUTPUT2, datatype: INT32, dims: [16]}\n")
    assert "declares output 'OUTPUT2'" in message
    assert "OUTPUT0 INT32 [-1, 16], OUTPUT1 INT32 [-1, 16]" in message


def test_file_input_the_config_does_not_declare(tmp_path: Path) -> None:
    message = _load_error(_add_sub(tmp_path), "inputs:\n  - {name: INPUT0, datatype: INT32, dims: [16]}\n")
    assert "also needs inputs INPUT1 INT32 [-1, 16]" in message
    assert "declare them" in message


def test_max_batch_size_on_a_fixed_first_dim(tmp_path: Path) -> None:
    message = _load_error(_scale(tmp_path, batch=1), "max_batch_size: 4\n")
    assert "max_batch_size 4 needs a variable first dimension" in message
    assert "fixes input x FP32 [1, 4]" in message
    assert "max_batch_size: 0" in message


def test_max_batch_size_zero_with_batchless_dims_contradicts_a_batched_file(tmp_path: Path) -> None:
    """With max_batch_size 0 the dims are the whole shape, as in Triton, so [16] is not [batch, 16]."""
    message = _load_error(_scale(tmp_path), "max_batch_size: 0\ninputs:\n  - {name: x, datatype: FP32, dims: [4]}\n")
    assert "input x FP32 [4] contradicts" in message


def test_broken_repository_wrong_dims(built_repository: Path, tmp_path: Path) -> None:
    source = ModelRepository(broken_repository(tmp_path / "broken", built_repository)).source("wrong_dims")
    runtime = runtime_class(source.platform)(source.files[1], source.config)
    signature = runtime.load()
    with pytest.raises(ModelLoadError) as caught:
        resolve(source.name, 1, source.platform, source.config, signature, DEFAULTS, source.files[1])
    message = str(caught.value)
    assert message.startswith(f"{source.directory / 'config.yaml'}: input x FP32 [-1, 5] contradicts")
    assert f"{source.files[1]}, which has x FP32 [-1, 4]" in message


# -- resolve: without a file signature (TorchScript) -----------------------------------------------


def test_no_signature_takes_the_config(built_repository: Path) -> None:
    model_dir = built_repository / "tiny_cnn"
    config = ModelConfig.from_file(model_dir / "config.yaml")
    spec = resolve("tiny_cnn", 1, Platform.TORCHSCRIPT, config, None, DEFAULTS, model_dir / "1" / "model.pt")
    assert spec.max_batch_size == 32
    assert spec.inputs == (TensorSpec("image", "FP32", (-1, 1, 8, 8)),)
    assert spec.outputs == (TensorSpec("logits", "FP32", (-1, 10)), TensorSpec("probabilities", "FP32", (-1, 10)))
    assert spec.max_queue_delay_ms == 2
    assert spec.max_queue_size == 99


def test_no_signature_and_no_max_batch_size_is_unbatched(tmp_path: Path) -> None:
    config = ModelConfig.model_validate(
        {
            "inputs": [{"name": "a", "datatype": "FP32", "dims": [3]}],
            "outputs": [{"name": "b", "datatype": "FP32", "dims": [3]}],
        }
    )
    spec = resolve("m", 2, Platform.TORCHSCRIPT, config, None, DEFAULTS, tmp_path / "m" / "2" / "model.pt")
    assert spec.max_batch_size == 0
    assert spec.version == 2
    assert spec.inputs == (TensorSpec("a", "FP32", (3,)),)


# -- resolve: dynamic batching, instances, parameters -----------------------------------------------


def test_dynamic_batching_from_config(tmp_path: Path) -> None:
    model_file = scale_onnx(tmp_path / "m" / "1" / "model.onnx")
    config = (
        "instance_count: 3\nparameters: {intra_op_num_threads: 1}\n"
        "dynamic_batching:\n  max_queue_delay_ms: 5\n  preferred_batch_sizes: [8, 2, 8]\n  max_queue_size: 10\n"
    )
    spec = _resolve(model_file, config)
    assert spec.max_queue_delay_ms == 5
    assert spec.preferred_batch_sizes == (2, 8)
    assert spec.max_queue_size == 10
    assert spec.instance_count == 3
    assert spec.parameters == {"intra_op_num_threads": 1}


def test_dynamic_batching_partly_set_falls_back_to_the_defaults(tmp_path: Path) -> None:
    spec = _resolve(_scale(tmp_path), "dynamic_batching: {max_queue_delay_ms: 0.5}\n")
    assert spec.max_queue_delay_ms == 0.5
    assert spec.max_queue_size == 99
    assert spec.preferred_batch_sizes == ()


def test_dynamic_batching_zero_is_a_value_not_a_default(tmp_path: Path) -> None:
    spec = _resolve(_scale(tmp_path), "dynamic_batching: {max_queue_delay_ms: 0, max_queue_size: 0}\n")
    assert spec.max_queue_delay_ms == 0
    assert spec.max_queue_size == 0


def test_dynamic_batching_absent_takes_the_defaults(tmp_path: Path) -> None:
    spec = _resolve(_scale(tmp_path), "max_batch_size: 4\n")
    assert spec.max_batch_size == 4
    assert (spec.max_queue_delay_ms, spec.preferred_batch_sizes, spec.max_queue_size) == (1.5, (), 99)


# -- ModelSpec.validate, input, check_outputs ------------------------------------------------------


def _pair(batch: int, width: int = 16, dtype: type = np.int32) -> dict[str, np.ndarray]:
    return {"INPUT0": np.zeros((batch, width), dtype), "INPUT1": np.ones((batch, width), dtype)}


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_validate_returns_the_batch_size(simple: ModelSpec, batch: int) -> None:
    assert simple.validate(_pair(batch)) == batch


def test_validate_unknown_input(simple: ModelSpec) -> None:
    with pytest.raises(InvalidInput) as caught:
        simple.validate({**_pair(1), "INPUT2": np.zeros((1, 16), np.int32)})
    assert str(caught.value) == (
        "model 'simple' has no input 'INPUT2'; its inputs are INPUT0 INT32 [-1, 16], INPUT1 INT32 [-1, 16]"
    )


def test_validate_missing_input(simple: ModelSpec) -> None:
    with pytest.raises(InvalidInput) as caught:
        simple.validate({"INPUT0": np.zeros((1, 16), np.int32)})
    assert str(caught.value) == "model 'simple' needs input INPUT1 INT32 [-1, 16], which the request does not send"


def test_validate_missing_every_input(simple: ModelSpec) -> None:
    with pytest.raises(InvalidInput, match="needs inputs INPUT0 INT32 \\[-1, 16\\], INPUT1 INT32 \\[-1, 16\\]"):
        simple.validate({})


@pytest.mark.parametrize(("dtype", "shown"), [(np.float32, "FP32"), (np.int64, "INT64"), (np.complex64, "complex64")])
def test_validate_wrong_datatype(simple: ModelSpec, dtype: type, shown: str) -> None:
    inputs = _pair(2)
    inputs["INPUT1"] = inputs["INPUT1"].astype(dtype)
    with pytest.raises(InvalidInput) as caught:
        simple.validate(inputs)
    assert str(caught.value) == f"input 'INPUT1' has datatype {shown}; model 'simple' expects INT32"


@pytest.mark.parametrize("shape", [(2, 15), (2, 16, 1), (16,), ()])
def test_validate_wrong_shape(simple: ModelSpec, shape: tuple[int, ...]) -> None:
    inputs = _pair(2)
    inputs["INPUT0"] = np.zeros(shape, np.int32)
    with pytest.raises(InvalidInput) as caught:
        simple.validate(inputs)
    assert str(caught.value) == (
        f"input 'INPUT0' has shape {list(shape)}; model 'simple' expects [-1, 16] (-1: any size)"
    )


def test_validate_batch_above_max_batch_size(simple: ModelSpec) -> None:
    with pytest.raises(InvalidInput) as caught:
        simple.validate(_pair(9))
    assert str(caught.value) == "batch size 9 is outside 1..8 (max_batch_size of model 'simple')"


def test_validate_batch_zero(simple: ModelSpec) -> None:
    with pytest.raises(InvalidInput, match=r"batch size 0 is outside 1\.\.8"):
        simple.validate(_pair(0))


def test_validate_inputs_disagreeing_on_the_batch_size(simple: ModelSpec) -> None:
    inputs = {"INPUT0": np.zeros((3, 16), np.int32), "INPUT1": np.zeros((2, 16), np.int32)}
    with pytest.raises(InvalidInput) as caught:
        simple.validate(inputs)
    assert str(caught.value) == "inputs of model 'simple' disagree on the batch size: [2, 3]"


def test_validate_unbatched_model_returns_one(tmp_path: Path) -> None:
    spec = _resolve(_scale(tmp_path, batch=2))
    assert spec.validate({"x": np.zeros((2, 4), np.float32)}) == 1
    with pytest.raises(InvalidInput, match=r"has shape \[3, 4\]; model 'scale' expects \[2, 4\]"):
        spec.validate({"x": np.zeros((3, 4), np.float32)})


@pytest.mark.parametrize(
    "array",
    [
        np.array([b"hello", b"world"], dtype=object),
        np.array(["hello", "world"], dtype=object),
        np.array([b"hello", b"world"]),
        np.array(["hello", "world"]),
    ],
    ids=["object-bytes", "object-str", "numpy-bytes", "numpy-str"],
)
def test_validate_bytes_accepts_strings(tmp_path: Path, array: np.ndarray) -> None:
    spec = _resolve(_strings_onnx(tmp_path / "strings" / "1" / "model.onnx"))
    assert spec.inputs == (TensorSpec("text", "BYTES", (-1,)),)
    assert spec.validate({"text": array}) == 2


def test_validate_bytes_refuses_numbers(tmp_path: Path) -> None:
    spec = _resolve(_strings_onnx(tmp_path / "strings" / "1" / "model.onnx"))
    with pytest.raises(InvalidInput, match="input 'text' has datatype INT64; model 'strings' expects BYTES"):
        spec.validate({"text": np.array([1, 2], dtype=np.int64)})


def test_input_by_name(simple: ModelSpec) -> None:
    assert simple.input("INPUT1") == TensorSpec("INPUT1", "INT32", (-1, 16))
    with pytest.raises(InvalidInput, match="model 'simple' has no input 'input1'; its inputs are INPUT0 INT32"):
        simple.input("input1")


def test_check_outputs(simple: ModelSpec) -> None:
    simple.check_outputs([])
    simple.check_outputs(["OUTPUT1", "OUTPUT0"])
    with pytest.raises(InvalidInput) as caught:
        simple.check_outputs(["OUTPUT0", "OUTPUT9"])
    assert str(caught.value) == (
        "model 'simple' has no output 'OUTPUT9'; its outputs are OUTPUT0 INT32 [-1, 16], OUTPUT1 INT32 [-1, 16]"
    )


def test_each_priority_level_gets_its_own_queue_policy_or_the_default(tmp_path: Path) -> None:
    model_file = scale_onnx(tmp_path / "ranked" / "1" / "model.onnx")
    spec = _resolve(
        model_file,
        "dynamic_batching:\n  priority_levels: 3\n  default_queue_policy: {max_queue_size: 9}\n"
        "  priority_queue_policy: {1: {timeout_action: DELAY, default_timeout_microseconds: 100}}\n",
    )

    assert spec.priority_levels == spec.default_priority_level == 3  # no default named: the lowest
    assert spec.queue_policies[1] == QueuePolicy("DELAY", 100, False, 0)
    assert spec.queue_policies[2] == spec.queue_policies[3] == QueuePolicy(max_queue_size=9)
    assert spec.priority_of({}) == 3
    assert spec.priority_of({"priority": 0}) == 3
    assert spec.priority_of({"priority": 1}) == 1
    for wrong in (4, -1, "1", True, 1.0):
        with pytest.raises(InvalidInput, match="priority levels 1 \\(the highest\\) to 3"):
            spec.priority_of({"priority": wrong})


def test_a_model_without_priority_levels_ignores_the_priority_parameter(tmp_path: Path) -> None:
    spec = _resolve(scale_onnx(tmp_path / "plain" / "1" / "model.onnx"))

    assert spec.priority_of({"priority": 9}) == 0
    assert spec.queue_policies == {}

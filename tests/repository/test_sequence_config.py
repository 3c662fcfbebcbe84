"""``sequence_batching`` in config.yaml and in Triton's config.pbtxt: read into the same fields, and
refused naming the field where it cannot be served."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig
from modelserve.repository.triton import read_pbtxt
from tests.builders import write_config

# Triton's docs/examples/model_repository/simple_dyna_sequence, as it is.
DYNA = """
name: "simple_dyna_sequence"
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {
    max_sequence_idle_microseconds: 10000000
    oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 10000 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""


def test_tritons_dyna_sequence_example_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(DYNA)
    section = read_pbtxt(path).sequence_batching
    assert section is not None
    assert section.max_sequence_idle_microseconds == 10_000_000
    assert section.oldest is not None
    assert section.direct is None
    assert (section.oldest.max_candidate_sequences, section.oldest.max_queue_delay_microseconds) == (1024, 10000)
    controls = {c.name: c.control[0] for c in section.control_input}
    assert controls["START"].kind == "CONTROL_SEQUENCE_START"  # protobuf's JSON leaves the first value out
    assert controls["END"].int32_false_true == [0, 1]
    assert controls["CORRID"].data_type == "UINT64"
    assert [(s.input_name, s.output_name, s.data_type, s.dims) for s in section.state] == [
        ("S_IN", "S_OUT", "FP32", [2])
    ]


def test_direct_is_the_default_strategy(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('platform: "onnxruntime_onnx" max_batch_size: 2 sequence_batching { }')
    section = read_pbtxt(path).sequence_batching
    assert section is not None
    assert section.direct is not None
    assert section.oldest is None


def test_decoupled_models_are_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('platform: "onnxruntime_onnx" model_transaction_policy { decoupled: true }')
    with pytest.raises(ModelLoadError, match=r"model_transaction_policy\.decoupled"):
        read_pbtxt(path)


def test_config_yaml_spells_it_as_config_pbtxt_does(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "m",
        """sequence_batching:
  direct: {}
  max_sequence_idle_microseconds: 5000
  control_input:
    - {name: READY, control: [{kind: CONTROL_SEQUENCE_READY, bool_false_true: [false, true]}]}
""",
    )
    section = ModelConfig.from_file(path).sequence_batching
    assert section is not None
    assert section.control_input[0].control[0].bool_false_true == [False, True]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("direct: {}\n  oldest: {}", "sequence_batching: Value error, set one of direct or oldest"),
        (
            "control_input: [{name: S, control: [{kind: CONTROL_SEQUENCE_START}]}]",
            "sequence_batching.control_input.0.control.0: Value error, CONTROL_SEQUENCE_START takes one of",
        ),
        (
            "control_input: [{name: C, control: [{kind: CONTROL_SEQUENCE_CORRID, data_type: FP32}]}]",
            "sequence_batching.control_input.0.control.0.data_type: Value error, data_type 'FP32' cannot hold",
        ),
        (
            "state: [{input_name: A, output_name: B, data_type: INT32, dims: [-1]}]",
            "sequence_batching.state.0.dims: Value error, dims [-1] must be fixed positive sizes",
        ),
        ("max_sequence_idle_microseconds: 0", "sequence_batching.max_sequence_idle_microseconds: Input should be"),
        (
            "control_input: [{name: X, control: [{kind: CONTROL_SEQUENCE_START, int32_false_true: [0, 1]}]},"
            " {name: X, control: [{kind: CONTROL_SEQUENCE_END, int32_false_true: [0, 1]}]}]",
            "needs a name of its own; repeated: X",
        ),
    ],
)
def test_refusals_name_the_field(tmp_path: Path, section: str, message: str) -> None:
    path = write_config(tmp_path / "m", f"sequence_batching:\n  {section}\n")
    with pytest.raises(ModelLoadError) as refused:
        ModelConfig.from_file(path)
    assert message in refused.value.message


def test_sequence_batching_excludes_dynamic_batching_and_warmup(tmp_path: Path) -> None:
    path = write_config(tmp_path / "m", "sequence_batching: {}\ndynamic_batching: {}\n")
    with pytest.raises(ModelLoadError, match="sequence_batching and dynamic_batching exclude each other"):
        ModelConfig.from_file(path)
    path = write_config(tmp_path / "n", "sequence_batching: {}\nwarmup: {}\n")
    with pytest.raises(ModelLoadError, match="warmup is not run for a model with sequence_batching"):
        ModelConfig.from_file(path)

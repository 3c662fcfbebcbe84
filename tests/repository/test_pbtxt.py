"""A repository moved from Triton loads with its config.pbtxt files as they are: read with the protobuf
definitions Triton reads them with, into config.yaml's fields; a config.yaml beside one wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.errors import ModelLoadError
from modelserve.repository.config import Platform
from modelserve.repository.layout import ModelRepository
from tests.builders import add_sub_onnx
from tests.python_models import ADD_SUB

# Triton's docs' `simple` model configuration (docs/user_guide/model_configuration.md's form).
SIMPLE_PBTXT = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
dynamic_batching { max_queue_delay_microseconds: 500 preferred_batch_size: [ 4, 8 ] }
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 2 } }
parameters { key: "intra_op_num_threads" value: { string_value: "1" } }
"""

# python_backend's examples/add_sub/config.pbtxt.
ADD_SUB_PBTXT = """
name: "add_sub"
backend: "python"

input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]

instance_group [{ kind: KIND_CPU }]
"""


def test_a_triton_config_pbtxt_is_read_into_config_yamls_fields(tmp_path: Path) -> None:
    add_sub_onnx(tmp_path / "simple" / "1" / "model.onnx")
    (tmp_path / "simple" / "config.pbtxt").write_text(SIMPLE_PBTXT)
    (tmp_path / "add_sub" / "1").mkdir(parents=True)
    (tmp_path / "add_sub" / "1" / "model.py").write_text(ADD_SUB)
    (tmp_path / "add_sub" / "config.pbtxt").write_text(ADD_SUB_PBTXT)
    repository = ModelRepository(tmp_path)

    simple = repository.source("simple").config
    assert simple.platform is Platform.ONNX
    assert simple.max_batch_size == 8
    assert [(t.name, t.datatype, t.dims) for t in simple.inputs] == [
        ("INPUT0", "INT32", [16]),
        ("INPUT1", "INT32", [16]),
    ]
    assert simple.dynamic_batching is not None
    assert simple.dynamic_batching.max_queue_delay_ms == 0.5
    assert simple.dynamic_batching.preferred_batch_sizes == [4, 8]
    assert simple.instance_count == 2
    assert simple.version_policy.select([1, 2, 3]) == [2, 3]
    assert simple.parameters == {"intra_op_num_threads": "1"}

    add_sub = repository.source("add_sub")
    assert add_sub.platform is Platform.PYTHON
    assert add_sub.config.max_batch_size == 0, "Triton's default where the text gives none"
    assert [t.datatype for t in add_sub.config.outputs] == ["FP32", "FP32"]


def test_config_yaml_wins_and_a_broken_pbtxt_is_named(tmp_path: Path) -> None:
    add_sub_onnx(tmp_path / "simple" / "1" / "model.onnx")
    (tmp_path / "simple" / "config.pbtxt").write_text(SIMPLE_PBTXT)
    (tmp_path / "simple" / "config.yaml").write_text("max_batch_size: 4\n")
    assert ModelRepository(tmp_path).source("simple").config.max_batch_size == 4

    (tmp_path / "simple" / "config.yaml").unlink()
    (tmp_path / "simple" / "config.pbtxt").write_text('name: "simple"\nmax_batch_sise: 8\n')
    with pytest.raises(ModelLoadError, match=r"config\.pbtxt: not a Triton model configuration: .*max_batch_sise"):
        ModelRepository(tmp_path).source("simple")


def test_a_decoupled_model_which_would_answer_wrongly_is_refused(tmp_path: Path) -> None:
    add_sub_onnx(tmp_path / "simple" / "1" / "model.onnx")
    (tmp_path / "simple" / "config.pbtxt").write_text(SIMPLE_PBTXT + "model_transaction_policy { decoupled: true }")
    with pytest.raises(ModelLoadError, match="decoupled"):
        ModelRepository(tmp_path).source("simple")

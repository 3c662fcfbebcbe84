"""Open Inference Protocol datatypes <-> numpy dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.errors import InvalidInput
from modelserve.types import DATATYPE_TO_NUMPY, TensorSpec, datatype_of, numpy_dtype

EXPECTED = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def test_every_protocol_datatype_is_mapped() -> None:
    assert set(DATATYPE_TO_NUMPY) == set(EXPECTED)


@pytest.mark.parametrize(("datatype", "scalar"), EXPECTED.items())
def test_numpy_dtype_of_each_datatype(datatype: str, scalar: type) -> None:
    assert numpy_dtype(datatype) == np.dtype(scalar)


@pytest.mark.parametrize(("datatype", "scalar"), EXPECTED.items())
def test_datatype_of_each_numpy_dtype(datatype: str, scalar: type) -> None:
    assert datatype_of(np.dtype(scalar)) == datatype


@pytest.mark.parametrize("datatype", list(EXPECTED))
def test_round_trip(datatype: str) -> None:
    assert datatype_of(numpy_dtype(datatype)) == datatype


@pytest.mark.parametrize("datatype", ["FLOAT32", "fp32", "STRING", ""])
def test_unknown_datatype_names_the_accepted_ones(datatype: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        numpy_dtype(datatype)
    message = str(caught.value)
    assert repr(datatype) in message
    assert "FP32" in message
    assert "BYTES" in message


@pytest.mark.parametrize("dtype", ["<U5", "S3", "O"])
def test_numpy_strings_and_objects_are_bytes(dtype: str) -> None:
    assert datatype_of(np.dtype(dtype)) == "BYTES"


def test_array_of_python_strings_is_bytes() -> None:
    assert datatype_of(np.array(["a", "bc"]).dtype) == "BYTES"
    assert datatype_of(np.array([b"a", b"bc"]).dtype) == "BYTES"


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, "datetime64[s]"])
def test_numpy_dtype_without_datatype_is_refused(dtype: object) -> None:
    with pytest.raises(InvalidInput, match="has no Open Inference Protocol datatype"):
        datatype_of(np.dtype(dtype))  # type: ignore[call-overload]


def test_tensor_spec_describe() -> None:
    assert TensorSpec("INPUT0", "INT32", (-1, 16)).describe() == "INPUT0 INT32 [-1, 16]"
    assert TensorSpec("scalar", "FP32", ()).describe() == "scalar FP32 []"

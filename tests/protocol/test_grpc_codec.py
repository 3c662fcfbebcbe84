"""ModelInferRequest/Response ↔ numpy: typed contents, raw contents, and what is refused."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from modelserve.errors import InvalidInput
from modelserve.protocol.grpc_codec import decode_infer_request, encode_infer_response
from modelserve.types import InferenceResponse

TYPED = [
    ("BOOL", "bool_contents", [True, False, True], np.bool_),
    ("INT8", "int_contents", [-128, 0, 127], np.int8),
    ("INT16", "int_contents", [-3, 0, 3], np.int16),
    ("INT32", "int_contents", [-(2**31), 0, 2**31 - 1], np.int32),
    ("INT64", "int64_contents", [-(2**63), 0, 2**63 - 1], np.int64),
    ("UINT8", "uint_contents", [0, 1, 255], np.uint8),
    ("UINT16", "uint_contents", [0, 1, 65535], np.uint16),
    ("UINT32", "uint_contents", [0, 1, 2**32 - 1], np.uint32),
    ("UINT64", "uint64_contents", [0, 1, 2**64 - 1], np.uint64),
    ("FP32", "fp32_contents", [1.5, -2.25, 0.0], np.float32),
    ("FP64", "fp64_contents", [1e-300, -2.5, 3.0], np.float64),
]


def request(*tensors: tuple[str, str, list[int]], **fields: object) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name="m", **fields)  # type: ignore[arg-type]
    for name, datatype, shape in tensors:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    return message


@pytest.mark.parametrize(("datatype", "field", "values", "dtype"), TYPED)
def test_typed_contents(datatype: str, field: str, values: list[object], dtype: type) -> None:
    message = request(("x", datatype, [1, 3]))
    getattr(message.inputs[0].contents, field).extend(values)
    array = decode_infer_request(message).inputs["x"]
    assert array.dtype == np.dtype(dtype)
    assert array.shape == (1, 3)
    assert array.tolist() == [values]


@pytest.mark.parametrize(("datatype", "field", "values", "dtype"), TYPED)
def test_raw_contents_are_views_of_the_message_bytes(
    datatype: str, field: str, values: list[object], dtype: type
) -> None:
    expected = np.array(values, dtype=dtype).reshape(3, 1)
    message = request(("x", datatype, [3, 1]))
    message.raw_input_contents.append(expected.tobytes())
    array = decode_infer_request(message).inputs["x"]
    np.testing.assert_array_equal(array, expected)
    assert not array.flags.owndata


def test_fp16_and_bytes_travel_raw() -> None:
    half = np.array([[0.5, -1.0]], dtype=np.float16)
    text = [b"a", b"", "é".encode()]
    message = request(("h", "FP16", [1, 2]), ("t", "BYTES", [3]))
    message.raw_input_contents.extend([half.tobytes(), b"".join(struct.pack("<I", len(v)) + v for v in text)])
    inputs = decode_infer_request(message).inputs
    np.testing.assert_array_equal(inputs["h"], half)
    assert inputs["t"].tolist() == text


def test_bytes_in_typed_contents() -> None:
    message = request(("t", "BYTES", [2]))
    message.inputs[0].contents.bytes_contents.extend([b"x", b"yz"])
    assert decode_infer_request(message).inputs["t"].tolist() == [b"x", b"yz"]


def test_request_fields_are_carried() -> None:
    message = request(("x", "FP32", [1]), model_version="3", id="abc")
    message.inputs[0].contents.fp32_contents.append(1.0)
    message.outputs.add(name="y")
    message.parameters["priority"].int64_param = 2
    message.parameters["tag"].string_param = "blue"
    decoded = decode_infer_request(message)
    assert (decoded.model, decoded.version, decoded.id, decoded.outputs) == ("m", 3, "abc", ["y"])
    assert decoded.parameters == {"priority": 2, "tag": "blue"}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: None, "no inputs"),
        (lambda m: m.inputs.add(name="x", datatype="FP16", shape=[1]), "FP16 travels only in raw_input_contents"),
        (lambda m: m.inputs.add(name="x", datatype="FP33", shape=[1]), "input 'x': unsupported datatype 'FP33'"),
        (lambda m: m.inputs.add(name="x", datatype="FP32", shape=[-1]), "negative dimensions"),
        (
            lambda m: m.inputs.add(name="x", datatype="FP32", shape=[2]),
            "fp32_contents holds 0 values but shape [2] needs 2",
        ),
        (
            lambda m: (
                m.inputs.add(name="x", datatype="FP32", shape=[1]).parameters["shared_memory_region"].string_param
            ),
            "shared_memory_region needs a name, shared_memory_byte_size",
        ),
        (lambda m: m.outputs.add(name="y").parameters["classification"].int64_param, "classification is not supported"),
        (lambda m: m.inputs.add(name="x", datatype="FP32", shape=[0] * 65), "input 'x': shape [0, 0"),
        (lambda m: m.inputs.add(name="x", datatype="INT32", shape=[0, 2**62, 4]), "cannot be held"),
    ],
)
def test_malformed_requests_say_what_to_fix(build: object, message: str) -> None:
    bad = service_pb2.ModelInferRequest(model_name="m")
    build(bad)  # type: ignore[operator]
    if bad.outputs:
        bad.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(0.0)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_infer_request(bad)


def test_raw_contents_must_match_inputs_and_shapes() -> None:
    message = request(("a", "INT32", [2]), ("b", "INT32", [2]))
    message.raw_input_contents.append(np.zeros(2, np.int32).tobytes())
    with pytest.raises(InvalidInput, match="raw_input_contents holds 1 entries for 2 inputs"):
        decode_infer_request(message)
    message.raw_input_contents.append(np.zeros(3, np.int32).tobytes())
    with pytest.raises(InvalidInput, match=r"input 'b': raw_input_contents size 12 does not match shape \[2\]"):
        decode_infer_request(message)
    twice = request(("a", "INT32", [1]), ("a", "INT32", [1]))
    twice.raw_input_contents.extend([bytes(4), bytes(4)])
    with pytest.raises(InvalidInput, match="appears twice"):
        decode_infer_request(twice)


def test_an_input_sent_twice_is_refused_as_such_whatever_the_sizes_of_its_raw_contents() -> None:
    """Each input takes the raw entry at its own position: the first 'a' is read from its own 4 bytes, not
    from the 8 sent for the second, which would have refused it for a size it was never sent with."""
    twice = request(("a", "INT32", [1]), ("a", "INT32", [2]))
    twice.raw_input_contents.extend([bytes(4), bytes(8)])
    with pytest.raises(InvalidInput, match="input 'a' appears twice in the request"):
        decode_infer_request(twice)


def test_raw_contents_skip_the_inputs_placed_in_shared_memory() -> None:
    """Raw contents hold one entry per input not in shared memory, in order: 'b' takes the only one."""
    message = request(("a", "INT32", [1]), ("b", "INT32", [2]))
    region = message.inputs[0].parameters
    region["shared_memory_region"].string_param = "r"
    region["shared_memory_byte_size"].int64_param = 4
    message.raw_input_contents.append(np.array([7, 8], np.int32).tobytes())
    with pytest.raises(InvalidInput, match="tensor 'a': shared memory is not available on this endpoint"):
        decode_infer_request(message)
    del message.inputs[0]
    message.inputs.add(name="a", datatype="INT32", shape=[1])  # now last, and carried raw as well
    message.raw_input_contents.append(np.array([9], np.int32).tobytes())
    decoded = decode_infer_request(message).inputs
    assert decoded["b"].tolist() == [7, 8]
    assert decoded["a"].tolist() == [9]


def test_typed_contents_beside_raw_contents_are_refused_in_tritons_words() -> None:
    """grpc_explicit_int_content_client, one of Triton's examples, expects exactly this refusal."""
    message = request(("INPUT0", "INT32", [1, 2]), ("INPUT1", "INT32", [1, 2]))
    message.model_name = "simple"
    message.raw_input_contents.append(np.zeros(2, np.int32).tobytes())
    message.inputs[0].contents.int_contents.extend([1, 2])
    expected = "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"
    with pytest.raises(InvalidInput, match=re.escape(expected)):
        decode_infer_request(message)


def test_response_carries_raw_outputs() -> None:
    outputs = {"y": np.arange(6, dtype=np.float32).reshape(2, 3), "t": np.array([b"ok", b""], dtype=object)}
    message = encode_infer_response(InferenceResponse("m", 4, outputs, "id-9"))
    assert (message.model_name, message.model_version, message.id) == ("m", "4", "id-9")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("y", "FP32", [2, 3]),
        ("t", "BYTES", [2]),
    ]
    np.testing.assert_array_equal(np.frombuffer(message.raw_output_contents[0], np.float32).reshape(2, 3), outputs["y"])
    assert message.raw_output_contents[1] == struct.pack("<I", 2) + b"ok" + struct.pack("<I", 0)

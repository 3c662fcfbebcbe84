"""The V2 codec on its own: JSON and binary tensors in, response bodies out, and compression.

Malformed requests are in test_v2_codec_refusals.py."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from modelserve.errors import InvalidInput, PayloadTooLarge
from modelserve.protocol.v2_codec import OutputFormat, decode_request, decompress, encode_response
from modelserve.types import DATATYPE_TO_NUMPY, InferenceRequest, InferenceResponse
from tests.protocol.serving import binary_request, pack_bytes, split_response, tensor, v2_body


def _decode(body: bytes, header_length: int | None = None) -> InferenceRequest:
    request, _ = decode_request(body, header_length, "m", None)
    return request


def _views_body(array: np.ndarray, body: bytes) -> bool:
    return np.shares_memory(array, np.frombuffer(body, dtype=np.uint8))


# -- JSON tensors ------------------------------------------------------------------------------------


def test_flat_json_data_is_shaped_by_shape() -> None:
    request = _decode(v2_body(tensor("x", "FP32", [2, 3], [1, 2, 3, 4, 5, 6])))

    assert request.model == "m"
    assert request.version is None
    assert request.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(request.inputs["x"], [[1, 2, 3], [4, 5, 6]])


def test_nested_json_data_is_accepted() -> None:
    request = _decode(v2_body(tensor("x", "INT64", [2, 2], [[1, 2], [3, 4]])))

    assert request.inputs["x"].dtype == np.int64
    np.testing.assert_array_equal(request.inputs["x"], [[1, 2], [3, 4]])


def test_scalar_shape_takes_one_value() -> None:
    request = _decode(v2_body(tensor("x", "FP64", [], [2.5])))

    assert request.inputs["x"].shape == ()
    assert request.inputs["x"] == 2.5


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("BOOL", [True, False, True], [True, False, True]),
        ("UINT8", [0, 255, 7], [0, 255, 7]),
        ("UINT16", [0, 65535, 7], [0, 65535, 7]),
        ("UINT32", [0, 2**32 - 1, 7], [0, 2**32 - 1, 7]),
        ("UINT64", [0, 2**64 - 1, 7], [0, 2**64 - 1, 7]),
        ("INT8", [-128, 127, 0], [-128, 127, 0]),
        ("INT16", [-(2**15), 2**15 - 1, 0], [-(2**15), 2**15 - 1, 0]),
        ("INT32", [-(2**31), 2**31 - 1, 0], [-(2**31), 2**31 - 1, 0]),
        ("INT64", [-(2**63), 2**63 - 1, 0], [-(2**63), 2**63 - 1, 0]),
        ("FP16", [0.5, -2.0, 65504.0], [0.5, -2.0, 65504.0]),
        ("FP32", [0.25, -1.5, 3.0], [0.25, -1.5, 3.0]),
        ("FP64", [0.1, -1e300, 3.0], [0.1, -1e300, 3.0]),
        ("BYTES", ["héllo", "", "x y"], ["héllo".encode(), b"", b"x y"]),
    ],
)
def test_every_datatype_decodes_from_json(datatype: str, data: list[Any], expected: list[Any]) -> None:
    array = _decode(v2_body(tensor("x", datatype, [3], data))).inputs["x"]

    assert array.dtype == DATATYPE_TO_NUMPY[datatype]
    assert array.shape == (3,)
    assert array.tolist() == expected


def test_nested_bytes_json_data_becomes_a_shaped_object_array() -> None:
    array = _decode(v2_body(tensor("s", "BYTES", [2, 2], [["a", "b"], ["c", "d"]]))).inputs["s"]

    assert array.dtype == object
    assert array.shape == (2, 2)
    assert array.tolist() == [[b"a", b"b"], [b"c", b"d"]]


# -- the binary tensor extension ---------------------------------------------------------------------


def test_binary_inputs_are_zero_copy_views_of_the_body() -> None:
    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    ints = np.array([[1, -2], [3, -4]], dtype=np.int64)
    body, length = binary_request(
        {
            "inputs": [
                tensor("f", "FP32", [2, 3], binary_data_size=floats.nbytes),
                tensor("i", "INT64", [2, 2], binary_data_size=ints.nbytes),
            ]
        },
        floats.tobytes(),
        ints.tobytes(),
    )

    request = _decode(body, length)

    np.testing.assert_array_equal(request.inputs["f"], floats)
    np.testing.assert_array_equal(request.inputs["i"], ints)
    assert request.inputs["f"].dtype == np.float32
    assert request.inputs["i"].dtype == np.int64
    assert _views_body(request.inputs["f"], body)
    assert _views_body(request.inputs["i"], body)


@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("BOOL", np.array([True, False, False, True])),
        ("UINT8", np.array([0, 1, 254, 255], dtype=np.uint8)),
        ("INT16", np.array([-(2**15), -1, 0, 2**15 - 1], dtype=np.int16)),
        ("UINT64", np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64)),
        ("FP16", np.array([0.5, -0.25, 1024.0, -65504.0], dtype=np.float16)),
        ("FP64", np.array([0.1, -0.2, 1e-300, 1e300], dtype=np.float64)),
    ],
)
def test_every_fixed_size_datatype_decodes_from_binary(datatype: str, array: np.ndarray) -> None:
    body, length = binary_request(
        {"inputs": [tensor("x", datatype, [2, 2], binary_data_size=array.nbytes)]}, array.tobytes()
    )

    decoded = _decode(body, length).inputs["x"]

    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array.reshape(2, 2))
    assert _views_body(decoded, body)


def test_binary_bytes_are_length_prefixed_elements() -> None:
    items = [b"first", b"", "zw\u00f6lf".encode(), b"\x00\xff"]
    raw = pack_bytes(*items)
    body, length = binary_request({"inputs": [tensor("s", "BYTES", [2, 2], binary_data_size=len(raw))]}, raw)

    array = _decode(body, length).inputs["s"]

    assert array.dtype == object
    assert array.shape == (2, 2)
    assert array.reshape(-1).tolist() == items


def test_json_and_binary_inputs_mix_in_any_order() -> None:
    first = np.array([1, 2, 3], dtype=np.int32)
    second = np.array([[0.5], [1.5]], dtype=np.float64)
    body, length = binary_request(
        {
            "inputs": [
                tensor("a", "INT32", [3], binary_data_size=first.nbytes),
                tensor("json", "FP32", [2], [7, 8]),
                tensor("b", "FP64", [2, 1], binary_data_size=second.nbytes),
                tensor("text", "BYTES", [1], ["hi"]),
            ]
        },
        first.tobytes(),
        second.tobytes(),
    )

    inputs = _decode(body, length).inputs

    assert list(inputs) == ["a", "json", "b", "text"]
    np.testing.assert_array_equal(inputs["a"], first)
    np.testing.assert_array_equal(inputs["json"], np.array([7, 8], dtype=np.float32))
    np.testing.assert_array_equal(inputs["b"], second)
    assert inputs["text"].tolist() == [b"hi"]
    assert _views_body(inputs["a"], body)
    assert _views_body(inputs["b"], body)


def test_a_body_built_by_tritonclient_decodes() -> None:
    ints = np.arange(16, dtype=np.int32).reshape(1, 16)
    halves = np.array([[0.5, 1.5]], dtype=np.float16)
    flags = np.array([True, False, True])
    words = np.array([b"alpha", b"", b"\xce\xb2"], dtype=object)
    inputs = [
        triton.InferInput("ints", [1, 16], "INT32"),
        triton.InferInput("halves", [1, 2], "FP16"),
        triton.InferInput("flags", [3], "BOOL"),
        triton.InferInput("words", [3], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(ints, binary_data=True)
    inputs[1].set_data_from_numpy(halves, binary_data=False)
    inputs[2].set_data_from_numpy(flags, binary_data=True)
    inputs[3].set_data_from_numpy(words, binary_data=True)
    outputs = [
        triton.InferRequestedOutput("as_binary", binary_data=True),
        triton.InferRequestedOutput("as_json", binary_data=False),
    ]
    body, length = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs, request_id="req-7")

    request, form = decode_request(body, length, "simple", 3)

    assert (request.model, request.version, request.id) == ("simple", 3, "req-7")
    np.testing.assert_array_equal(request.inputs["ints"], ints)
    np.testing.assert_array_equal(request.inputs["halves"], halves)
    assert request.inputs["halves"].dtype == np.float16
    np.testing.assert_array_equal(request.inputs["flags"], flags)
    assert request.inputs["words"].tolist() == [b"alpha", b"", b"\xce\xb2"]
    assert _views_body(request.inputs["ints"], body)
    assert request.outputs == ["as_binary", "as_json"]
    assert form.is_binary("as_binary")
    assert not form.is_binary("as_json")


# -- requested outputs and the output format ---------------------------------------------------------


def test_requested_outputs_with_binary_flags_and_a_request_default() -> None:
    body = v2_body(
        tensor("x", "FP32", [1], [1]),
        outputs=[
            {"name": "yes", "parameters": {"binary_data": True}},
            {"name": "no", "parameters": {"binary_data": False}},
            {"name": "default"},
        ],
        parameters={"binary_data_output": True},
    )

    request, form = decode_request(body, None, "m", None)

    assert request.outputs == ["yes", "no", "default"]
    assert form == OutputFormat({"yes": True, "no": False}, True)
    assert (form.is_binary("yes"), form.is_binary("no"), form.is_binary("default")) == (True, False, True)
    assert form.is_binary("not requested")
    assert request.parameters == {"binary_data_output": True}


def test_without_outputs_every_output_is_json() -> None:
    request, form = decode_request(v2_body(tensor("x", "FP32", [1], [1])), None, "m", None)

    assert request.outputs is None
    assert request.id is None
    assert not form.is_binary("anything")


def test_output_format_defaults_to_json_for_unflagged_outputs() -> None:
    body = v2_body(tensor("x", "FP32", [1], [1]), outputs=[{"name": "a"}, {"name": "b", "parameters": {}}])

    _, form = decode_request(body, None, "m", None)

    assert not form.is_binary("a")
    assert not form.is_binary("b")


# -- responses ---------------------------------------------------------------------------------------


def _response(**outputs: np.ndarray) -> InferenceResponse:
    return InferenceResponse("model", 2, outputs, "req-1")


def test_json_response_carries_every_datatype() -> None:
    response = _response(
        flags=np.array([True, False]),
        halves=np.array([[0.5], [-2.0]], dtype=np.float16),
        big=np.array([2**63 - 1, -(2**63)], dtype=np.int64),
        unsigned=np.array([2**64 - 1, 0], dtype=np.uint64),
        text=np.array([b"caf\xc3\xa9", b""], dtype=object),
        strings=np.array(["x", "yz"]),
        transposed=np.arange(6, dtype=np.float32).reshape(2, 3).T,
    )

    body, header_length = encode_response(response, OutputFormat({}, False))

    assert header_length is None
    document = orjson.loads(body)
    assert (document["model_name"], document["model_version"], document["id"]) == ("model", "2", "req-1")
    outputs = {o["name"]: o for o in document["outputs"]}
    assert list(outputs) == ["flags", "halves", "big", "unsigned", "text", "strings", "transposed"]
    assert outputs["flags"] == {"name": "flags", "datatype": "BOOL", "shape": [2], "data": [True, False]}
    assert outputs["halves"] == {"name": "halves", "datatype": "FP16", "shape": [2, 1], "data": [0.5, -2.0]}
    assert outputs["big"]["datatype"] == "INT64"
    assert outputs["big"]["data"] == [2**63 - 1, -(2**63)]
    assert outputs["unsigned"]["data"] == [2**64 - 1, 0]
    assert outputs["text"] == {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["café", ""]}
    assert outputs["strings"]["datatype"] == "BYTES"
    assert outputs["strings"]["data"] == ["x", "yz"]
    assert outputs["transposed"]["shape"] == [3, 2]
    assert outputs["transposed"]["data"] == [0, 3, 1, 4, 2, 5]  # row-major order of the transposed view


def test_response_without_id_has_no_id() -> None:
    body, _ = encode_response(InferenceResponse("m", 1, {"y": np.zeros(1, np.float32)}), OutputFormat({}, False))

    assert "id" not in orjson.loads(body)


def test_binary_response_layout_parses_back() -> None:
    response = _response(
        ints=np.arange(6, dtype=np.int32).reshape(2, 3),
        json=np.array([1.5, 2.5], dtype=np.float64),
        words=np.array([b"ab", b"", b"\xff"], dtype=object),
        halves=np.array([1.0, -0.5], dtype=np.float16),
    )
    form = OutputFormat({"ints": True, "json": False, "words": True}, binary_default=True)

    body, header_length = encode_response(response, form)

    assert header_length is not None
    header, arrays = split_response(body, header_length)
    assert header["id"] == "req-1"
    sizes = {o["name"]: o.get("parameters", {}).get("binary_data_size") for o in header["outputs"]}
    assert sizes == {"ints": 24, "json": None, "words": 4 + 2 + 4 + 0 + 4 + 1, "halves": 4}
    assert "data" not in header["outputs"][0]
    assert len(body) == header_length + 24 + 15 + 4
    np.testing.assert_array_equal(arrays["ints"], response.outputs["ints"])
    np.testing.assert_array_equal(arrays["json"], response.outputs["json"])
    assert arrays["words"].tolist() == [b"ab", b"", b"\xff"]
    np.testing.assert_array_equal(arrays["halves"], response.outputs["halves"])
    assert body[header_length + 24 : header_length + 28] == b"\x02\x00\x00\x00"  # little-endian length of b"ab"

    parsed = triton.InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(parsed.as_numpy("ints"), response.outputs["ints"])
    np.testing.assert_array_equal(parsed.as_numpy("json"), response.outputs["json"])
    assert parsed.as_numpy("words").tolist() == [b"ab", b"", b"\xff"]


# -- compression -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)], ids=["gzip", "deflate"]
)
def test_compressed_bodies_are_inflated(encoding: str, compress: Any) -> None:
    body = v2_body(tensor("x", "INT32", [4], [1, 2, 3, 4]))

    inflated = decompress(compress(body), encoding, limit=len(body))

    assert inflated == body
    np.testing.assert_array_equal(_decode(inflated).inputs["x"], [1, 2, 3, 4])


@pytest.mark.parametrize("encoding", [None, "", "identity"])
def test_uncompressed_bodies_pass_through(encoding: str | None) -> None:
    body = b'{"inputs": []}'

    assert decompress(body, encoding, limit=1) is body


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_unknown_content_encoding_is_refused(encoding: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decompress(gzip.compress(b"{}"), encoding, limit=1024)

    assert repr(encoding) in caught.value.message
    assert "gzip" in caught.value.message
    assert "deflate" in caught.value.message


def test_body_that_is_not_the_declared_encoding_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        decompress(b"plain text, not gzip", "gzip", limit=1024)

    assert "not valid gzip" in caught.value.message


def test_decompressed_body_may_reach_the_limit_exactly() -> None:
    assert decompress(gzip.compress(b"a" * 1000), "gzip", limit=1000) == b"a" * 1000


def test_decompression_bomb_is_refused() -> None:
    bomb = gzip.compress(bytes(20 * 1024 * 1024))
    assert len(bomb) < 64 * 1024

    with pytest.raises(PayloadTooLarge) as caught:
        decompress(bomb, "gzip", limit=1024 * 1024)

    assert str(1024 * 1024) in caught.value.message
    assert "MAX_INPUT_SIZE_MB" in caught.value.message


def test_one_byte_over_the_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        decompress(zlib.compress(b"a" * 1001), "deflate", limit=1000)


def test_bytes_outputs_that_are_not_text_are_refused_in_json_not_mangled() -> None:
    raw = np.array([b"\xff\xfe", b"ok"], dtype=np.object_)
    response = InferenceResponse(model="m", version=1, outputs={"ECHO": raw})
    body, header_length = encode_response(response, OutputFormat({"ECHO": True}, False))
    assert header_length is not None
    assert body.endswith(b"\x02\x00\x00\x00\xff\xfe\x02\x00\x00\x00ok")
    with pytest.raises(InvalidInput, match=r"output 'ECHO' holds bytes that are not UTF-8 text.*binary_data"):
        encode_response(response, OutputFormat({}, False))

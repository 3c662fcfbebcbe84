"""The V2 codec refuses every malformed request with InvalidInput naming the tensor and what was expected."""

from __future__ import annotations

from typing import Any

import pytest

from modelserve.errors import InvalidInput
from modelserve.protocol.v2_codec import decode_request
from tests.protocol.serving import binary_request, pack_bytes, tensor, v2_body


def _refusal(body: bytes, header_length: int | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        decode_request(body, header_length, "m", None)
    return caught.value.message


# -- malformed requests ------------------------------------------------------------------------------


def _binary_case(*inputs: dict[str, Any], data: bytes) -> tuple[bytes, int]:
    return binary_request({"inputs": list(inputs)}, data)


MALFORMED_JSON: dict[str, tuple[bytes, list[str]]] = {
    "invalid JSON": (b'{"inputs": [', ["not valid JSON"]),
    "a JSON list": (b"[1, 2]", ["JSON object", "'inputs'"]),
    "no inputs": (b'{"outputs": []}', ["non-empty 'inputs'"]),
    "empty inputs": (b'{"inputs": []}', ["non-empty 'inputs'"]),
    "input without name": (v2_body({"datatype": "FP32", "shape": [1], "data": [1]}), ["'name'"]),
    "input without datatype": (v2_body({"name": "x", "shape": [1], "data": [1]}), ["input 'x'", "'datatype'"]),
    "input without shape": (v2_body({"name": "x", "datatype": "FP32", "data": [1]}), ["input 'x'", "'shape'"]),
    "shape not a list": (v2_body(tensor("x", "FP32", 2, [1, 2])), ["input 'x'", "'shape'", "got 2"]),
    "input without data": (v2_body(tensor("x", "FP32", [1])), ["input 'x'", "'data'", "binary_data_size"]),
    "negative dims": (v2_body(tensor("x", "FP32", [-1, 2], [1, 2])), ["input 'x'", "non-negative", "[-1, 2]"]),
    "unknown datatype": (v2_body(tensor("x", "FP8", [1], [1])), ["input 'x'", "'FP8'", "FP32", "BYTES"]),
    "lowercase datatype": (v2_body(tensor("x", "fp32", [1], [1])), ["input 'x'", "'fp32'", "FP32"]),
    "too few values": (v2_body(tensor("x", "FP32", [2, 2], [1, 2, 3])), ["input 'x'", "3 values", "[2, 2]", "4"]),
    "too many values": (v2_body(tensor("x", "INT32", [2], [[1, 2], [3, 4]])), ["input 'x'", "4 values", "2"]),
    "non-numeric data": (v2_body(tensor("x", "FP32", [2], ["a", "b"])), ["input 'x'", "FP32"]),
    "object as data": (v2_body(tensor("x", "INT64", [1], {"v": 1})), ["input 'x'", "INT64"]),
    "ragged data": (v2_body(tensor("x", "FP32", [2, 2], [[1, 2], [3]])), ["input 'x'", "FP32"]),
    "value out of range": (v2_body(tensor("x", "INT8", [2], [1, 300])), ["input 'x'", "INT8"]),
    "negative unsigned": (v2_body(tensor("x", "UINT16", [1], [-1])), ["input 'x'", "UINT16"]),
    "numbers as BYTES": (v2_body(tensor("x", "BYTES", [2], [1, 2])), ["input 'x'", "BYTES", "strings"]),
    "duplicate input": (
        v2_body(tensor("x", "FP32", [1], [1]), tensor("x", "FP32", [1], [2])),
        ["input 'x'", "twice"],
    ),
    "parameters not an object": (
        v2_body({**tensor("x", "FP32", [1], [1]), "parameters": [1]}),
        ["parameters of input 'x'", "JSON object"],
    ),
    "request parameters not an object": (
        v2_body(tensor("x", "FP32", [1], [1]), parameters="fast"),
        ["request parameters", "JSON object"],
    ),
    "shared-memory input": (
        v2_body(tensor("x", "FP32", [1], shared_memory_region="r", shared_memory_byte_size=4)),
        ["tensor 'x'", "shared memory is not available"],
    ),
    "outputs not a list": (v2_body(tensor("x", "FP32", [1], [1]), outputs={"name": "y"}), ["'outputs'", "list"]),
    "output without name": (v2_body(tensor("x", "FP32", [1], [1]), outputs=[{"parameters": {}}]), ["'name'"]),
    "shared-memory output": (
        v2_body(tensor("x", "FP32", [1], [1]), outputs=[{"name": "y", "parameters": {"shared_memory_region": "r"}}]),
        ["tensor 'y'", "shared_memory_region needs a name, shared_memory_byte_size"],
    ),
    "classification output": (
        v2_body(tensor("x", "FP32", [1], [1]), outputs=[{"name": "y", "parameters": {"classification": 3}}]),
        ["output 'y'", "classification", "not supported"],
    ),
    "more dimensions than numpy holds": (
        v2_body(tensor("x", "FP32", [0] * 65, [])),
        ["input 'x'", "cannot be held", "64"],
    ),
    "dimensions overflowing numpy's index": (
        v2_body(tensor("x", "INT32", [0, 2**62, 4], [])),
        ["input 'x'", "cannot be held", str(2**62)],
    ),
    "binary size without binary data": (
        v2_body(tensor("x", "FP32", [2], binary_data_size=8)),
        ["input 'x'", "binary_data_size 8", "0 bytes"],
    ),
}


@pytest.mark.parametrize(("body", "fragments"), list(MALFORMED_JSON.values()), ids=list(MALFORMED_JSON))
def test_malformed_json_request_is_refused_with_what_to_fix(body: bytes, fragments: list[str]) -> None:
    message = _refusal(body)

    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


MALFORMED_BINARY: dict[str, tuple[tuple[bytes, int], list[str]]] = {
    "size not matching shape": (
        _binary_case(tensor("x", "FP32", [2], binary_data_size=12), data=bytes(12)),
        ["input 'x'", "binary_data_size 12", "[2]", "FP32", "8 bytes"],
    ),
    "size running past the body": (
        _binary_case(tensor("x", "FP32", [4], binary_data_size=16), data=bytes(8)),
        ["input 'x'", "binary_data_size 16", "8 bytes"],
    ),
    "second input running past the body": (
        _binary_case(
            tensor("a", "INT32", [1], binary_data_size=4),
            tensor("b", "INT32", [2], binary_data_size=8),
            data=bytes(8),
        ),
        ["input 'b'", "binary_data_size 8"],
    ),
    "negative size": (
        _binary_case(tensor("x", "UINT8", [0], binary_data_size=-1), data=b""),
        ["input 'x'", "binary_data_size -1"],
    ),
    "size not an integer": (
        _binary_case(tensor("x", "UINT8", [4], binary_data_size="4"), data=bytes(4)),
        ["input 'x'", "binary_data_size '4'"],
    ),
    "leftover bytes": (
        _binary_case(tensor("x", "FP32", [2], binary_data_size=8), data=bytes(12)),
        ["12 bytes", "adds up to 8"],
    ),
    "bytes after a JSON-only header": (
        _binary_case(tensor("x", "FP32", [1], [1.0]), data=bytes(4)),
        ["4 bytes", "adds up to 0"],
    ),
    "BYTES cut inside a length": (
        _binary_case(tensor("s", "BYTES", [2], binary_data_size=7), data=pack_bytes(b"a") + b"\x01\x00"),
        ["input 's'", "4-byte length"],
    ),
    "BYTES element past the data": (
        _binary_case(tensor("s", "BYTES", [1], binary_data_size=6), data=b"\x09\x00\x00\x00ab"),
        ["input 's'", "9 bytes", "runs past"],
    ),
    "BYTES element count not the shape": (
        _binary_case(tensor("s", "BYTES", [3], binary_data_size=10), data=pack_bytes(b"ab", b"")),
        ["input 's'", "2 elements", "needs 3"],
    ),
    "binary shape numpy cannot hold": (
        _binary_case(tensor("x", "UINT8", [0, 2**62, 4], binary_data_size=0), data=b""),
        ["input 'x'", "cannot be held"],
    ),
    "BYTES shape numpy cannot hold": (
        _binary_case(tensor("s", "BYTES", [0] * 65, binary_data_size=0), data=b""),
        ["input 's'", "cannot be held"],
    ),
    "duplicate binary input": (
        _binary_case(
            tensor("x", "UINT8", [1], binary_data_size=1), tensor("x", "UINT8", [1], binary_data_size=1), data=b"ab"
        ),
        ["input 'x'", "twice"],
    ),
}


@pytest.mark.parametrize(("request_", "fragments"), list(MALFORMED_BINARY.values()), ids=list(MALFORMED_BINARY))
def test_malformed_binary_request_is_refused_with_what_to_fix(
    request_: tuple[bytes, int], fragments: list[str]
) -> None:
    body, header_length = request_

    message = _refusal(body, header_length)

    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


@pytest.mark.parametrize("header_length", [10_000, -1])
def test_header_length_outside_the_body_is_refused(header_length: int) -> None:
    body = v2_body(tensor("x", "FP32", [1], [1]))

    message = _refusal(body, header_length)

    assert "Inference-Header-Content-Length" in message
    assert str(header_length) in message
    assert f"{len(body)}-byte body" in message


def test_header_length_cutting_the_json_short_is_refused() -> None:
    body = v2_body(tensor("x", "FP32", [1], [1]))

    assert "not valid JSON" in _refusal(body, len(body) - 3)


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        pytest.param("FP32", ["1.5"], id="string-spelling-a-float-as-FP32"),
        pytest.param("INT32", ["7"], id="string-spelling-an-int-as-INT32"),
        pytest.param("FP32", [None], id="null-as-FP32"),  # would silently become NaN
        pytest.param("FP64", [True], id="boolean-as-FP64"),
        pytest.param("INT32", [1.5], id="fraction-as-INT32"),  # would silently be truncated to 1
        pytest.param("INT64", [2.9], id="fraction-as-INT64"),
        pytest.param("BOOL", [2], id="number-as-BOOL"),
    ],
)
def test_json_values_of_the_wrong_kind_are_refused_not_coerced(datatype: str, data: list[Any]) -> None:
    message = _refusal(v2_body(tensor("x", datatype, [1], data)))

    assert "input 'x'" in message
    assert datatype in message

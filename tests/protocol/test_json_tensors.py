"""Large numeric JSON tensors are read straight into numpy (json_tensors), and decode exactly as the
ordinary path decodes them: the same arrays, bit for bit.

Bodies the fast path gives up on, and every refusal, are in test_json_tensors_fallback.py."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import orjson
import pytest

from modelserve.protocol import json_tensors
from modelserve.protocol.v2_codec import decode_request
from tests.protocol.json_bodies import (
    LONG,
    array,
    body_text,
    floats,
    integers,
    one,
    ordinary_outcome,
    outcome,
    spliced,
    tensor_text,
)
from tests.protocol.serving import binary_request, tensor

_F32 = floats()
_SPACED = [" 1.5", "\n-2.25", "\t3", "\r\n4e-3 "]
# Numbers written every way JSON allows, each spelled so that parsers could disagree on it.
_SPELLINGS = [
    "0", "-0", "0.0", "-0.0", "1e-3", "1E+5", "-2.5e-10", "2.5E10", "1e-400", "4.9e-324", "5e-324",
    "2.2250738585072011e-308", "0.1000000000000000055511151231257827021181583404541015625",
    "123456789.123456789123456789", "1.00000000000000000000000000000000000001", "9007199254740991",
    "-9007199254740991", "16777217", "0.30000000000000004", "1.0000000596046448", "65503.9",
]  # fmt: skip

# name: (datatype, tokens, shape or None for flat [len]): each is lifted, read by simdjson, and must come
# out as the ordinary path makes it.
LIFTED: dict[str, tuple[str, list[str], list[int] | None]] = {
    "FP32 as orjson writes it": ("FP32", _F32, None),
    "FP32 shaped [1, 5, 500]": ("FP32", _F32, [1, 5, 500]),
    "FP32 every spelling": ("FP32", _SPELLINGS * 120, None),
    "FP64 every spelling": ("FP64", _SPELLINGS * 120, None),
    "FP16 every spelling in range": ("FP16", [s for s in _SPELLINGS if abs(float(s)) < 6e4] * 150, None),
    "FP64 as orjson writes it": ("FP64", floats(dtype=np.float64), None),
    "FP16 as orjson writes it": ("FP16", floats(dtype=np.float16), None),
    "FP32 integers only": ("FP32", integers(-(2**31), 2**31), None),
    "FP32 integers up to 2**53": ("FP32", integers(-(2**53) + 1, 2**53 - 1), None),
    "FP64 integers up to 2**53": ("FP64", integers(-(2**53) + 1, 2**53 - 1), None),
    "FP16 integers": ("FP16", integers(-65000, 65000), None),
    "FP32 integers and floats mixed": (
        "FP32",
        [t for pair in zip(_F32, integers(-9, 9), strict=True) for t in pair],
        None,
    ),
    "FP32 minus zero as an integer": ("FP32", spliced(_F32, "-0"), None),
    "INT64 full range": ("INT64", integers(-(2**63), 2**63 - 1), None),
    "INT64 minus zero": ("INT64", spliced(integers(0, 9), "-0"), None),
    "INT32 full range": ("INT32", integers(-(2**31), 2**31 - 1), None),
    "INT16 full range": ("INT16", integers(-(2**15), 2**15 - 1), None),
    "INT8 full range": ("INT8", integers(-128, 127), None),
    "UINT8 full range": ("UINT8", integers(0, 255), None),
    "UINT16 full range": ("UINT16", integers(0, 2**16 - 1), None),
    "UINT32 full range": ("UINT32", integers(0, 2**32 - 1), None),
    "UINT64 below 2**63": ("UINT64", integers(0, 2**63 - 1), None),
    "INT64 flat into [50, 50]": ("INT64", integers(0, 9), [50, 50]),
}


@pytest.mark.parametrize(("datatype", "tokens", "shape"), list(LIFTED.values()), ids=list(LIFTED))
@pytest.mark.parametrize("separator", [",", ", ", " ,\n\t", "\r\n,  "], ids=["tight", "spaced", "tabs", "crlf"])
def test_lifted_array_decodes_as_the_ordinary_path(
    datatype: str, tokens: list[str], shape: list[int] | None, separator: str
) -> None:
    body = one(datatype, tokens, shape, separator)
    lifted = json_tensors.lift(body)
    assert lifted is not None
    [text] = lifted.arrays.values()

    assert json_tensors.numbers(text, datatype).size == len(tokens)  # the fast path vouches for it
    assert outcome(body) == ordinary_outcome(body)
    assert outcome(body)[0] == "decoded"


def test_whitespace_around_the_key_colon_and_brackets_is_lifted() -> None:
    data = array(_F32, inside=" \n\t\r")
    body = body_text(tensor_text("x", "FP32", [LONG], None, f'"data" \n:\t {data}'))

    assert json_tensors.lift(body) is not None
    assert outcome(body) == ordinary_outcome(body)


def test_several_inputs_and_request_fields_decode_as_the_ordinary_path() -> None:
    body = body_text(
        tensor_text("a", "FP32", [2, LONG // 2], array(_F32), '"parameters":{"note":"\\"data\\": [1]"}'),
        tensor_text("b", "INT64", [LONG], array(integers(-5, 5))),
        tensor_text("c", "FP32", [2], "[1.5,2]"),
        tensor_text("d", "BYTES", [1], '["data"]'),
        rest='"id":"r-1","parameters":{"binary_data_output":true},"outputs":[{"name":"y"}]',
    )
    lifted = json_tensors.lift(body)

    assert lifted is not None
    assert len(lifted.arrays) == 2
    decoded = outcome(body)
    assert decoded == ordinary_outcome(body)
    assert decoded[0] == "decoded"
    assert decoded[4] == "r-1"


def test_binary_inputs_beside_a_lifted_json_input_decode_as_the_ordinary_path() -> None:
    raw = np.arange(6, dtype=np.int32)
    body, header_length = binary_request(
        {
            "inputs": [
                tensor("j", "FP32", [LONG], [float(t) for t in _F32]),
                tensor("b", "INT32", [2, 3], binary_data_size=raw.nbytes),
            ]
        },
        raw.tobytes(),
    )

    assert json_tensors.lift(body[:header_length]) is not None
    assert outcome(body, header_length) == ordinary_outcome(body, header_length)
    assert outcome(body, header_length)[0] == "decoded"


@pytest.mark.parametrize("seed", range(40))
def test_random_tensors_written_by_any_client_decode_as_the_ordinary_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    datatype = str(rng.choice(["FP16", "FP32", "FP64", "INT8", "INT32", "INT64", "UINT8", "UINT32"]))
    dtype = np.dtype({"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype, datatype.lower()))
    count = int(rng.integers(1500, 4000))
    if dtype.kind == "f":
        values = (rng.standard_normal(count) * 10.0 ** rng.integers(-8, 4)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, count, endpoint=True, dtype=dtype)
    # As orjson, Python's json module (spaces, repr of doubles) and a C printf would write them.
    writers = [
        lambda: orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        lambda: json.dumps(values.tolist()),
        lambda: array([f"{v:.9e}" if dtype.kind == "f" else str(v) for v in values.tolist()], ", "),
    ]
    data = writers[seed % 3]()
    body = body_text(tensor_text("x", datatype, [count], data))

    assert json_tensors.lift(body) is not None
    assert outcome(body) == ordinary_outcome(body)
    assert outcome(body)[0] == "decoded"


def test_the_benchmark_workload_body_makes_no_python_number_per_element() -> None:
    # ResNet-18's input as `modelserve bench --protocol http-json` sends it. Through orjson, each of the
    # 150,528 floats was a Python object (24 bytes) in a list (8 more) before numpy read them.
    image = np.random.default_rng(0).standard_normal([1, 3, 224, 224]).astype(np.float32)
    body = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(image.shape), "data": image.reshape(-1)}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    decode_request(body, None, "m", None)  # imports and first-call allocations out of the measurement

    tracemalloc.start()
    try:
        request, _ = decode_request(body, None, "m", None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    np.testing.assert_array_equal(request.inputs["input"], image)
    # The doubles simdjson parses and the float32 copy: 12 bytes an element, not 32 and more.
    assert peak < 16 * image.size, f"{peak} bytes at peak for {image.size} floats"


def test_small_and_nested_arrays_are_not_lifted() -> None:
    assert json_tensors.lift(one("FP32", _F32[:100])) is None
    nested = body_text(tensor_text("x", "FP32", [2, LONG // 2], f"[{array(_F32[:1250])},{array(_F32[1250:])}]"))
    assert json_tensors.lift(nested) is None
    spaced = body_text(tensor_text("x", "FP32", [1, LONG], f"[ \n{array(_F32)}]"))
    assert json_tensors.lift(spaced) is None


def test_a_body_holding_a_nul_is_not_lifted() -> None:
    # The placeholders are strings starting with NUL: one the body brings could pose as one.
    escaped = body_text(tensor_text("x", "FP32", [LONG], array(_F32)), rest='"id":"\\u0000"')

    assert json_tensors.lift(escaped) is None

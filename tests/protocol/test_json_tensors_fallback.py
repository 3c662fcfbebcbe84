"""Large JSON tensors the fast path gives up on decode, or are refused, exactly as the ordinary path
decodes or refuses them: the same arrays, or the same 400 in the same words.

Each body carries an array long enough to be lifted, with its oddity at the start, middle or end."""

from __future__ import annotations

import pytest

from modelserve.protocol import json_tensors
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

_F32 = floats()
_INTS = integers(0, 100)
_HUGE = "1" + "0" * 400  # beyond a double
_BIG = "1" + "0" * 40  # beyond 64 bits

# name: (datatype, odd element, what the ordinary path does with it)
ODD_ELEMENTS: dict[str, tuple[str, str, str]] = {
    "string in FP32": ("FP32", '"1.5"', "refused"),
    # numpy makes numbers of booleans in a list of numbers: taken as 1.0 and 0.0 today.
    "true in FP32": ("FP32", "true", "decoded"),
    "false in FP64": ("FP64", "false", "decoded"),
    "true in INT32": ("INT32", "true", "decoded"),
    "null in FP32": ("FP32", "null", "refused"),
    "object in FP32": ("FP32", '{"v":1}', "refused"),
    "nested element in FP32": ("FP32", "[1]", "refused"),
    "empty list element in INT64": ("INT64", "[]", "refused"),
    "string holding a bracket in FP32": ("FP32", '"]"', "refused"),
    "NaN in FP32": ("FP32", "NaN", "refused"),
    "Infinity in FP32": ("FP32", "Infinity", "refused"),
    "-Infinity in FP64": ("FP64", "-Infinity", "refused"),
    "1e400 in FP32": ("FP32", "1e400", "refused"),
    "-1e400 in FP64": ("FP64", "-1e400", "refused"),
    "leading zero in FP32": ("FP32", "01", "refused"),
    "plus sign in FP32": ("FP32", "+1", "refused"),
    "bare fraction in FP32": ("FP32", ".5", "refused"),
    "dangling point in FP32": ("FP32", "1.", "refused"),
    "hex in INT32": ("INT32", "0x10", "refused"),
    "non-breaking space in FP32": ("FP32", "1\u00a0", "refused"),
    "2**64 in FP32": ("FP32", str(2**64), "decoded"),
    "41-digit integer in FP64": ("FP64", _BIG, "decoded"),
    "401-digit integer in FP64": ("FP64", _HUGE, "refused"),
    "2**53 + 1 in FP64": ("FP64", str(2**53 + 1), "decoded"),
    "2**53 in FP32": ("FP32", str(2**53), "decoded"),
    "largest FP32 in FP32": ("FP32", "3.4028234663852886e38", "decoded"),
    "1e39 in FP32 (overflows, with a warning)": ("FP32", "1e39", "decoded"),
    "largest FP64 in FP64": ("FP64", "1.7976931348623157e308", "decoded"),
    "65504 in FP16": ("FP16", "65504", "decoded"),
    "65519.9 in FP16": ("FP16", "65519.9", "decoded"),
    "70000 in FP16 (overflows, with a warning)": ("FP16", "70000", "decoded"),
    "fraction in INT32": ("INT32", "1.5", "refused"),
    "1.0 in INT32": ("INT32", "1.0", "refused"),
    "exponent in INT64": ("INT64", "1e2", "refused"),
    "2**31 in INT32": ("INT32", str(2**31), "refused"),
    "-2**31 - 1 in INT32": ("INT32", str(-(2**31) - 1), "refused"),
    "300 in UINT8": ("UINT8", "300", "refused"),
    "-1 in UINT8": ("UINT8", "-1", "refused"),
    "128 in INT8": ("INT8", "128", "refused"),
    "2**64 - 1 in UINT64": ("UINT64", str(2**64 - 1), "decoded"),
    "2**63 in UINT64": ("UINT64", str(2**63), "decoded"),
    "2**64 in UINT64": ("UINT64", str(2**64), "refused"),
    "-1 in UINT64": ("UINT64", "-1", "refused"),
    "2**63 in INT64": ("INT64", str(2**63), "refused"),
    "-2**63 - 1 in INT64": ("INT64", str(-(2**63) - 1), "refused"),
    "41-digit integer in INT64": ("INT64", _BIG, "refused"),
    "number in BOOL": ("BOOL", "1", "refused"),
}


@pytest.mark.parametrize(("datatype", "odd", "expected"), list(ODD_ELEMENTS.values()), ids=list(ODD_ELEMENTS))
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_odd_element_decodes_or_is_refused_as_by_the_ordinary_path(
    datatype: str, odd: str, expected: str, where: str
) -> None:
    base = _F32 if datatype.startswith("FP") else _INTS
    body = one(datatype, spliced(base, odd, where=where))
    if "]" not in odd:  # a bracket ends the text lifted there, if it is long enough to be
        assert json_tensors.lift(body) is not None

    result = outcome(body)

    assert result == ordinary_outcome(body)
    assert result[0] == expected, result[1]
    if expected == "refused":
        assert "input 'x'" in result[1] or "not valid JSON" in result[1]


def _tensor(datatype: str, shape: list[int] | None, data: str, extra: str = "") -> bytes:
    return body_text(tensor_text("x", datatype, shape, data, extra))


_NESTED = f"[{array(_F32[:1250])},{array(_F32[1250:])}]"
_BOOLS = ["true", "false"] * (LONG // 2)
_STRINGS = [f'"s{i}"' for i in range(LONG)]

# name: (body, what the ordinary path does with it)
BODIES: dict[str, tuple[bytes, str]] = {
    "BOOL as true and false": (_tensor("BOOL", [LONG], array(_BOOLS)), "decoded"),
    "BOOL as 0 and 1": (_tensor("BOOL", [LONG * 2], array(["0", "1"] * LONG)), "refused"),
    "BYTES as strings": (_tensor("BYTES", [LONG], array(_STRINGS)), "decoded"),
    "BYTES holding brackets": (_tensor("BYTES", [LONG], array(['"a]"', *_STRINGS[1:]])), "decoded"),
    "BYTES as numbers": (_tensor("BYTES", [LONG], array(_INTS)), "refused"),
    "BF16": (_tensor("BF16", [LONG], array(_F32)), "refused"),
    "lowercase fp32": (_tensor("fp32", [LONG], array(_F32)), "refused"),
    "no datatype": (body_text(f'{{"name":"x","shape":[{LONG}],"data":{array(_F32)}}}'), "refused"),
    "no shape": (_tensor("FP32", None, array(_F32)), "refused"),
    "negative shape": (_tensor("FP32", [-1, LONG], array(_F32)), "refused"),
    "too few values": (_tensor("FP32", [LONG + 1], array(_F32)), "refused"),
    "too many values": (_tensor("FP32", [LONG - 1], array(_F32)), "refused"),
    "values for another shape": (_tensor("INT64", [3, 7], array(_INTS)), "refused"),
    "nested as the shape": (_tensor("FP32", [2, LONG // 2], _NESTED), "decoded"),
    "nested otherwise than the shape": (_tensor("FP32", [LONG // 2, 2], _NESTED), "decoded"),
    "nested raggedly": (_tensor("FP32", [LONG], f"[{array(_F32[:1000])},{array(_F32[1000:])}]"), "refused"),
    "nested after a number": (_tensor("FP32", [LONG + 1], f"[1,{array(_F32)}]"), "refused"),
    "empty, padded with whitespace": (_tensor("FP32", [0], "[" + " " * 5000 + "]"), "decoded"),
    "empty, padded, for a shape of one": (_tensor("FP32", [1], "[" + " " * 5000 + "]"), "refused"),
    "trailing comma": (_tensor("FP32", [LONG], array([*_F32, ""])), "refused"),
    "no comma": (_tensor("FP32", [LONG], array(_F32).replace(",", " ", 1)), "refused"),
    "a second data key wins": (_tensor("FP32", [LONG], array(_F32), f'"data":{array(_F32[::-1])}'), "decoded"),
    "a short second data key wins": (_tensor("FP32", [2], array(_F32), '"data":[1,2]'), "decoded"),
    "a key ending in an escaped quote": (_tensor("FP32", [2], "[1,2]", f'"x\\"data":{array(_F32)}'), "decoded"),
    "a data key in the request parameters": (
        body_text(tensor_text("x", "FP32", [2], "[1,2]"), rest=f'"parameters":{{"data":{array(_F32)}}}'),
        "decoded",
    ),
    "a data key in an output": (
        body_text(tensor_text("x", "FP32", [2], "[1,2]"), rest=f'"outputs":[{{"name":"y","data":{array(_F32)}}}]'),
        "decoded",
    ),
    "data beside binary_data_size": (
        _tensor("FP32", [LONG], array(_F32), '"parameters":{"binary_data_size":0}'),
        "refused",
    ),
    "a placeholder's spelling as BYTES": (
        body_text(tensor_text("x", "FP32", [LONG], array(_F32)), tensor_text("y", "BYTES", [1], '"\\u00000"')),
        "decoded",
    ),
    "a placeholder's spelling as FP32": (
        body_text(tensor_text("x", "FP32", [LONG], array(_F32)), tensor_text("y", "FP32", [1], '"\\u00000"')),
        "refused",
    ),
    "duplicate input": (
        body_text(tensor_text("x", "FP32", [LONG], array(_F32)), tensor_text("x", "FP32", [LONG], array(_F32))),
        "refused",
    ),
    "an unterminated string after the array": (_tensor("FP32", [LONG], array(_F32), '"id":"abc'), "refused"),
    "the body cut inside the array": (_tensor("FP32", [LONG], array(_F32))[:-200], "refused"),
    "inputs not a list": (f'{{"inputs":{{"data":{array(_F32)}}}}}'.encode(), "refused"),
    "a list, not an object": (f'[{{"data":{array(_F32)}}}]'.encode(), "refused"),
    "request parameters not an object": (
        body_text(tensor_text("x", "FP32", [LONG], array(_F32)), rest='"parameters":[1]'),
        "refused",
    ),
}


@pytest.mark.parametrize(("body", "expected"), list(BODIES.values()), ids=list(BODIES))
def test_unusual_body_decodes_or_is_refused_as_by_the_ordinary_path(body: bytes, expected: str) -> None:
    result = outcome(body)

    assert result == ordinary_outcome(body)
    assert result[0] == expected, result[1]


def test_an_unusual_tensor_leaves_the_others_to_the_fast_path() -> None:
    # The nested input is decoded the ordinary way within the same pass; the flat one is still lifted.
    body = body_text(
        tensor_text("flat", "FP32", [LONG], array(_F32)), tensor_text("nested", "FP32", [2, LONG // 2], _NESTED)
    )
    lifted = json_tensors.lift(body)

    assert lifted is not None
    assert len(lifted.arrays) == 1
    assert outcome(body) == ordinary_outcome(body)

"""Large numeric tensors of a V2 JSON body, read from the JSON text straight into numpy.

orjson turns each element of a tensor's ``data`` into a Python object, and numpy then walks that list:
for ResNet-18's 150,528 floats some 10 ms of CPU a request, more than the model itself. Here each large
``data`` array is cut out of the text and replaced by a placeholder string, orjson parses the small rest
as before, and simdjson parses the array into a C buffer of doubles or 64-bit integers, some 3 ms.

The fast path vouches only for results the ordinary one (orjson, then ``v2_codec.json_array``) gives
too, bit for bit; whenever it cannot, it raises ``NotLifted`` and the caller decodes the original body
the ordinary way, so every refusal keeps its status and its words. It gives up on:

- arrays that start nested (``[[``), or that are not one valid flat JSON array of numbers: a string,
  ``true``, ``null``, ``NaN``, a bracket inside, an integer beyond 64 bits, a number beyond a double;
- BOOL and BYTES tensors, and float tensors given integers (numpy makes int64 of an all-integer
  list) beyond 2**53 or values beyond their type's range, where the ordinary path's cast would round
  or overflow differently; integer tensors given a fraction, an exponent or a value outside the type;
- a placeholder that does not come back as exactly one input's ``data``, which is how an array inside a
  string, under another key or overridden by a duplicate key shows itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import simdjson

from modelserve.types import numpy_dtype

# Below this an array's text is read as fast through orjson as through a second parser: measured even
# near 2.5 KiB (some 250 float32s as orjson writes them), and 20% ahead at 4 KiB.
MIN_ARRAY_BYTES = 4096

_KEY = b'"data"'
# After the key: the colon and a '[' not followed by another '[' (JSON's four whitespace characters only).
_FLAT_ARRAY_START = re.compile(rb"[ \t\n\r]*:[ \t\n\r]*(\[)(?![ \t\n\r]*\[)")
# A placeholder is a JSON string starting with \u0000. Where an array sat inside a string, its first quote
# closes that string and the backslash then stands outside one, which no JSON allows, so a placeholder
# can come back only where the array was a value. The body's own text is checked to hold no NUL.
_PLACEHOLDER = '"\\u0000{}"'
_NUL = (b"\\u0000", b"\x00")


class NotLifted(Exception):
    """The fast path cannot vouch for its result: decode the original body the ordinary way."""


@dataclass(frozen=True, slots=True)
class Lifted:
    """A JSON header with its large ``data`` arrays cut out: ``header`` holds a placeholder string in
    each one's place, and ``arrays`` maps each placeholder (as orjson reads it) to the array's text."""

    header: bytes
    arrays: dict[str, memoryview]


def lift(header: bytes) -> Lifted | None:
    """``header`` with each ``"data": [...]`` array of at least MIN_ARRAY_BYTES cut out, or None when
    there is none (or the text holds a NUL, which placeholders need to themselves)."""
    if len(header) < MIN_ARRAY_BYTES:
        return None
    pieces: list[bytes] = []
    arrays: dict[str, memoryview] = {}
    text = memoryview(header)  # slices of it are the arrays' text, not copies
    kept = 0
    position = header.find(_KEY)
    while position >= 0:
        after_key = position + len(_KEY)
        start = _FLAT_ARRAY_START.match(header, after_key)
        end = header.find(b"]", start.start(1)) + 1 if start else 0
        if start is None or end - start.start(1) < MIN_ARRAY_BYTES:
            position = header.find(_KEY, after_key)
            continue
        pieces.append(header[kept : start.start(1)])
        pieces.append(_PLACEHOLDER.format(len(arrays)).encode())
        arrays[f"\x00{len(arrays)}"] = text[start.start(1) : end]
        kept = end
        position = header.find(_KEY, end)
    if not arrays:
        return None
    pieces.append(header[kept:])
    if any(nul in piece for piece in pieces[::2] for nul in _NUL):
        return None
    return Lifted(b"".join(pieces), arrays)


def numbers(text: memoryview, datatype: str) -> np.ndarray[Any, Any]:
    """The flat JSON array ``text`` as a 1-D array of ``datatype``, exactly as ``json_array`` makes it
    from orjson's list, or NotLifted."""
    dtype = numpy_dtype(datatype)
    if dtype.kind not in "iuf":
        raise NotLifted
    of_type: Literal["d", "i"] = "d" if dtype.kind == "f" else "i"
    try:
        # A parser per call: simdjson's refuses reuse while a proxy of its last document lives, and
        # making one costs nothing next to the parse.
        document = simdjson.Parser().parse(text)
        buffer = document.as_buffer(of_type=of_type) if isinstance(document, simdjson.Array) else b""
    except Exception:  # any refusal of simdjson's (type, number, structure, size): let orjson decide
        raise NotLifted from None
    values = np.frombuffer(buffer, dtype=np.float64 if of_type == "d" else np.int64)
    if values.size == 0:
        raise NotLifted
    low, high = values.min(), values.max()
    if dtype.kind == "f":
        # An all-integer list reaches numpy as int64 through orjson, cast once; here it is a double first,
        # exact only below 2**53. Values near the type's largest may round or overflow (with a warning)
        # in the cast: both are left to the ordinary path.
        bound = min(2.0**53, float(np.finfo(dtype).max))
        if not -bound < low <= high < bound:
            raise NotLifted
    else:
        info = np.iinfo(dtype)
        if low < info.min or high > info.max:
            raise NotLifted
    return values.astype(dtype, copy=False)

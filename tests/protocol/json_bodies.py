"""Helpers of the JSON tensor tests: request bodies written as text, token by token (so that ``NaN``,
``-0``, ``1e400`` or a 40-digit number reach the server as written), and the outcome of decoding one,
through the fast path or the ordinary one, in a form two outcomes can be compared in."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson

from modelserve.errors import InvalidInput
from modelserve.protocol import json_tensors
from modelserve.protocol.v2_codec import decode_request

# Enough numbers for an array's text to pass json_tensors.MIN_ARRAY_BYTES, whatever their spelling.
LONG = 2500


def floats(seed: int = 0, count: int = LONG, dtype: Any = np.float32) -> list[str]:
    """Random normal numbers as orjson writes them (``modelserve bench``'s JSON workload)."""
    values = np.random.default_rng(seed).standard_normal(count).astype(dtype)
    return [token.decode() for token in orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")]


def integers(low: int, high: int, count: int = LONG, seed: int = 0) -> list[str]:
    """Random integers in [low, high], both ends included among them."""
    values = np.random.default_rng(seed).integers(low, high, count, endpoint=True).tolist()
    return [str(low), *map(str, values[2:]), str(high)]


def spliced(tokens: list[str], odd: str, *, where: str = "middle") -> list[str]:
    """``tokens`` with one element replaced by ``odd`` (raw JSON text), at the start, middle or end."""
    index = {"start": 0, "middle": len(tokens) // 2, "end": len(tokens) - 1}[where]
    return [*tokens[:index], odd, *tokens[index + 1 :]]


def array(tokens: list[str], separator: str = ",", *, inside: str = "") -> str:
    """A JSON array of raw tokens; ``inside`` is whitespace after '[' and before ']'."""
    return f"[{inside}{separator.join(tokens)}{inside}]"


def tensor_text(name: str, datatype: str, shape: list[int] | None, data: str | None, extra: str = "") -> str:
    """One input object as JSON text; ``data`` is raw JSON text, ``extra`` more raw members."""
    members = [f'"name":{json.dumps(name)}', f'"datatype":{json.dumps(datatype)}']
    if shape is not None:
        members.append(f'"shape":{json.dumps(shape)}')
    if data is not None:
        members.append(f'"data":{data}')
    if extra:
        members.append(extra)
    return "{" + ",".join(members) + "}"


def body_text(*inputs: str, rest: str = "") -> bytes:
    """A request body of input objects (JSON text) and ``rest``, raw top-level members after them."""
    return ('{"inputs":[' + ",".join(inputs) + "]" + (f",{rest}" if rest else "") + "}").encode()


def one(datatype: str, tokens: list[str], shape: list[int] | None = None, separator: str = ",") -> bytes:
    """A body of one input ``x`` holding ``tokens``, flat, shaped ``[len(tokens)]`` unless told."""
    return body_text(tensor_text("x", datatype, [len(tokens)] if shape is None else shape, array(tokens, separator)))


def outcome(body: bytes, header_length: int | None = None) -> tuple[Any, ...]:
    """What decoding ``body`` gives, comparable with ==: every array bit for bit (dtype, shape, bytes;
    BYTES as their values), the rest of the request, the output wishes and any warnings; or the
    refusal's exact words."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            request, form = decode_request(body, header_length, "m", None)
        except InvalidInput as exc:
            return ("refused", exc.message, [str(w.message) for w in caught])
    arrays = {
        name: (a.dtype.str, a.shape, a.tolist() if a.dtype == object else a.tobytes())
        for name, a in request.inputs.items()
    }
    return ("decoded", arrays, request.parameters, request.outputs, request.id, form, [str(w.message) for w in caught])


@contextmanager
def ordinary_path() -> Iterator[None]:
    """Decoding with no array large enough to be lifted: the path every body took before json_tensors."""
    saved = json_tensors.MIN_ARRAY_BYTES
    json_tensors.MIN_ARRAY_BYTES = sys.maxsize
    try:
        yield
    finally:
        json_tensors.MIN_ARRAY_BYTES = saved


def ordinary_outcome(body: bytes, header_length: int | None = None) -> tuple[Any, ...]:
    """``outcome`` of ``body`` through the ordinary path."""
    with ordinary_path():
        return outcome(body, header_length)

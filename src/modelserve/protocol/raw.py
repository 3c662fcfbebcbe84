"""Tensors as raw bytes, the way the binary extension, gRPC raw contents and shared memory carry them:
numbers in native little-endian layout, BYTES elements as a 4-byte little-endian length and the bytes."""

from __future__ import annotations

import struct
from math import prod
from typing import Any

import numpy as np

from modelserve.errors import InvalidInput
from modelserve.types import datatype_of, numpy_dtype

_LENGTH = struct.Struct("<I")


def from_raw(
    chunk: bytes | memoryview, datatype: str, shape: list[int], name: str, size_field: str = "binary_data_size"
) -> np.ndarray[Any, Any]:
    """A tensor from its raw bytes (HTTP binary data, gRPC raw contents): a view, not a copy.
    ``size_field`` names, in errors, where the caller stated the size."""
    count = prod(shape)
    if datatype == "BYTES":
        return reshaped(unpack_bytes(memoryview(chunk), count, name), shape, name)
    dtype = numpy_dtype(datatype)
    if len(chunk) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{name}': {size_field} {len(chunk)} does not match shape {shape} of {datatype} "
            f"({count * dtype.itemsize} bytes)"
        )
    return reshaped(np.frombuffer(chunk, dtype=dtype), shape, name)


def reshaped(array: np.ndarray[Any, Any], shape: list[int], name: str) -> np.ndarray[Any, Any]:
    """``array`` in the request's ``shape``. Elements matching the shape's count is not enough: a shape
    with a zero holds no elements whatever its other dimensions, yet numpy refuses more than 64
    dimensions, or dimensions whose product overflows its index."""
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}': shape {shape} cannot be held: {exc}") from None


def to_raw(array: np.ndarray[Any, Any]) -> bytes | memoryview:
    """A tensor's raw bytes, as the binary extension and gRPC carry them: a view where possible."""
    if datatype_of(array.dtype) == "BYTES":
        return pack_bytes(array)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def unpack_bytes(chunk: memoryview, count: int, name: str) -> np.ndarray[Any, Any]:
    """BYTES elements from their length-prefixed form; the count must match the shape."""
    items, position = [], 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise InvalidInput(f"input '{name}': BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(chunk, position)
        position += 4
        if position + length > len(chunk):
            raise InvalidInput(f"input '{name}': a BYTES element of {length} bytes runs past the data")
        items.append(bytes(chunk[position : position + length]))
        position += length
    if len(items) != count:
        raise InvalidInput(f"input '{name}': BYTES data holds {len(items)} elements but its shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def pack_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """BYTES elements in their length-prefixed form."""
    parts = []
    for value in array.reshape(-1):
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts += [_LENGTH.pack(len(raw)), raw]
    return b"".join(parts)

"""Open Inference Protocol (KServe V2) tensors over HTTP: JSON, and Triton's binary tensor extension.

With the binary extension the body is a JSON header of ``Inference-Header-Content-Length`` bytes
followed by raw tensor bytes in input order; each binary input says its size in
``parameters.binary_data_size``. Binary inputs become numpy views of the body, without a copy.
BYTES elements travel as a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import orjson

from modelserve.errors import InvalidInput, PayloadTooLarge
from modelserve.protocol import json_tensors
from modelserve.protocol.raw import from_raw, reshaped, to_raw
from modelserve.protocol.shared_memory import Placement, SharedMemoryRegistry
from modelserve.types import InferenceRequest, InferenceResponse, datatype_of, numpy_dtype


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """How the caller wants outputs back: binary by name, the default for unnamed ones, and those to
    write into shared memory."""

    binary: dict[str, bool]
    binary_default: bool
    shared: dict[str, Placement] = field(default_factory=dict)

    def is_binary(self, name: str) -> bool:
        """Whether output ``name`` goes back as raw bytes rather than JSON."""
        return self.binary.get(name, self.binary_default)


def parse_version(text: str | int | None) -> int | None:
    """A model version from a path or body: a positive integer, or None for "the newest"."""
    if text is None or text == "":
        return None
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    if isinstance(text, str) and _is_number(text) and int(text) > 0:
        return int(text)
    raise InvalidInput(f"model version {text!r} is not a positive integer")


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() also admits digits such as '³' that int() cannot read.
    return text.isascii() and text.isdigit()


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (tritonclient's request compression), within ``limit``."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes (MAX_INPUT_SIZE_MB)")
    return data


# Inflating stays on the event loop only while it is sure to be short: a compressed body of at most
# INLINE_BODY_BYTES, stopped at INLINE_OUTPUT_BYTES of output, takes at most about 0.15 ms (for data
# deflate codes byte by byte, the slowest kind), against some 30 to 50 µs for a hop to a thread and back. A larger
# body (0.6 ms at 64 KiB), or a small one that inflates further (a zip bomb within the limit), is
# inflated on a worker thread; zlib releases the GIL meanwhile.
INLINE_BODY_BYTES = 16 * 1024
INLINE_OUTPUT_BYTES = 64 * 1024


async def decompress_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``decompress``, moved off the event loop for bodies whose inflating could hold it up."""
    if not encoding or encoding == "identity":
        return body
    if len(body) <= INLINE_BODY_BYTES:
        try:
            return decompress(body, encoding, min(limit, INLINE_OUTPUT_BYTES))
        except PayloadTooLarge:
            if limit <= INLINE_OUTPUT_BYTES:
                raise
    return await asyncio.to_thread(decompress, body, encoding, limit)


def decode_request(
    body: bytes,
    header_length: int | None,
    model: str,
    version: int | None,
    shared_memory: SharedMemoryRegistry | None = None,
) -> tuple[InferenceRequest, OutputFormat]:
    """Parse a V2 infer request body into numpy tensors and the caller's output wishes; tensors placed
    in shared memory are read from (and checked against) ``shared_memory``.

    Large numeric ``data`` arrays are read by ``json_tensors`` first; where it cannot vouch for the
    result, or the request is refused, the body is decoded again the ordinary way, which decides."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not 0 <= header_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} does not fit the {len(body)}-byte body"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    lifted = json_tensors.lift(header)
    if lifted is not None:
        try:
            arrays = dict(lifted.arrays)
            return _decode_document(_parse(lifted.header), binary, model, version, shared_memory, arrays)
        except (InvalidInput, json_tensors.NotLifted):
            pass
    return _decode_document(_parse(header), binary, model, version, shared_memory, {})


def _parse(header: bytes) -> Any:
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def _decode_document(
    document: Any,
    binary: memoryview,
    model: str,
    version: int | None,
    shared_memory: SharedMemoryRegistry | None,
    lifted: dict[str, memoryview],
) -> tuple[InferenceRequest, OutputFormat]:
    """``lifted``: the placeholders ``json_tensors.lift`` put in ``document``, each to be consumed once,
    as one input's data, by the time the request is decoded."""
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise InvalidInput("request body must be a JSON object with a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for item in document["inputs"]:
        name, array, used = _decode_input(item, binary, offset, shared_memory, lifted)
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears twice in the request")
        inputs[name] = array
        offset += used
    if lifted:
        raise json_tensors.NotLifted  # a placeholder stood elsewhere: the array was not an input's data
    if offset != len(binary):
        raise InvalidInput(
            f"the body carries {len(binary)} bytes of binary tensor data, but binary_data_size adds up to {offset}"
        )
    parameters = _mapping(document.get("parameters"), "request parameters")
    outputs, binary_by_name, shared = _decode_outputs(document.get("outputs"), shared_memory)
    request_id = document.get("id")
    request = InferenceRequest(
        model=model,
        inputs=inputs,
        version=version,
        outputs=outputs,
        id=str(request_id) if request_id is not None else None,
        parameters=parameters,
    )
    return request, OutputFormat(binary_by_name, bool(parameters.get("binary_data_output", False)), shared)


def _decode_input(
    item: Any,
    binary: memoryview,
    offset: int,
    shared_memory: SharedMemoryRegistry | None,
    lifted: dict[str, memoryview],
) -> tuple[str, np.ndarray[Any, Any], int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput("each input must be an object with 'name', 'datatype', 'shape' and 'data'")
    name = item["name"]
    datatype, shape = item.get("datatype"), item.get("shape")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input '{name}' has no 'datatype' (FP32, INT64, BYTES, ...)")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input '{name}' needs 'shape' as a list of non-negative integers, got {shape!r}")
    try:
        numpy_dtype(datatype)
    except InvalidInput as exc:
        raise InvalidInput(f"input '{name}': {exc.message}") from None
    parameters = _mapping(item.get("parameters"), f"parameters of input '{name}'")
    count = prod(shape)
    placement = Placement.from_parameters(parameters, name)
    if placement is not None:
        return name, _shared(shared_memory, name).read(placement, datatype, shape, name), 0
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidInput(
                f"input '{name}': binary_data_size {size!r} runs past the {len(binary)} bytes of binary data"
            )
        return name, from_raw(binary[offset : offset + size], datatype, shape, name), size
    if "data" not in item:
        raise InvalidInput(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    return name, _from_json(item["data"], datatype, shape, count, name, lifted), 0


def _from_json(data: Any, datatype: str, shape: list[int], count: int, name: str, lifted: dict[str, memoryview]) -> Any:
    if isinstance(data, str) and data in lifted:
        array = json_tensors.numbers(lifted.pop(data), datatype)
    else:
        array = json_array(data, datatype, name)
    if array.size != count:
        raise InvalidInput(f"input '{name}': 'data' holds {array.size} values but shape {shape} needs {count}")
    return reshaped(array, shape, name)


# The kinds of JSON values (as numpy parses them) each datatype takes: no silent 1.5 → 1, true → 1.0,
# "2" → 2.0 or null → NaN, as Triton refuses them too.
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_KIND_NAMES = {"b": "true/false", "iu": "integers", "iuf": "numbers"}
_FOUND = {
    "b": "true/false",
    "i": "integers",
    "u": "integers",
    "f": "non-integer numbers",
    "U": "strings",
    "O": "nulls, mixed values or integers beyond 64 bits",
}


def json_array(data: Any, datatype: str, name: str) -> np.ndarray[Any, Any]:
    """A (nested) JSON list as an array of ``datatype``, refusing values of the wrong kind or range."""
    dtype = numpy_dtype(datatype)
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).reshape(-1)
            return np.array([_to_bytes(v, name) for v in flat] or [], dtype=object).reshape(np.shape(data))
        raw = np.asarray(data)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}': 'data' is not a {datatype} array: {exc}") from None
    if raw.size == 0:
        return np.empty(raw.shape, dtype=dtype)
    accepted = _ACCEPTED_KINDS[dtype.kind]
    if dtype == np.uint64 and raw.dtype.kind in "fO":
        # numpy parses ints above 2**63 mixed with small ones as floats; take them exactly, as Python ints.
        exact = np.asarray(data, dtype=object).reshape(-1)
        if all(type(v) is int and 0 <= v < 2**64 for v in exact):
            return np.array(exact.tolist(), dtype=np.uint64).reshape(raw.shape)
    if raw.dtype.kind not in accepted:
        found = _FOUND.get(raw.dtype.kind, "values of another kind")
        raise InvalidInput(f"input '{name}': {datatype} data must be {_KIND_NAMES[accepted]}, found {found}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInput(f"input '{name}': a value is outside the range of {datatype} ({info.min}..{info.max})")
    return raw.astype(dtype, copy=False)


def _to_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise InvalidInput(f"input '{name}': BYTES data must be strings, got {type(value).__name__}")


def _decode_outputs(
    outputs: Any, shared_memory: SharedMemoryRegistry | None
) -> tuple[list[str] | None, dict[str, bool], dict[str, Placement]]:
    if outputs is None:
        return None, {}, {}
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    binary: dict[str, bool] = {}
    shared: dict[str, Placement] = {}
    for output in outputs:
        name = output["name"]
        parameters = _mapping(output.get("parameters"), f"parameters of output '{name}'")
        if "classification" in parameters:
            raise InvalidInput(f"output '{name}': the classification extension is not supported")
        placement = Placement.from_parameters(parameters, name)
        if placement is not None:
            _shared(shared_memory, name).check(placement, name)  # refuse before the model runs
            shared[name] = placement
        if "binary_data" in parameters:
            binary[name] = bool(parameters["binary_data"])
    return [o["name"] for o in outputs], binary, shared


def _shared(shared_memory: SharedMemoryRegistry | None, tensor: str) -> SharedMemoryRegistry:
    if shared_memory is None:
        raise InvalidInput(f"tensor '{tensor}': shared memory is not available on this endpoint")
    return shared_memory


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def encode_response(
    response: InferenceResponse, form: OutputFormat, shared_memory: SharedMemoryRegistry | None = None
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it. Outputs placed in
    shared memory are written there, and the response says where, with no data."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, array in response.outputs.items():
        datatype = datatype_of(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in form.shared:
            entry["parameters"] = _shared(shared_memory, name).place(form.shared[name], array, name)
        elif form.is_binary(name):
            raw = to_raw(array)  # a view: the join below is the only copy made
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"] = json_text(array, name).reshape(-1).tolist()
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": response.model, "model_version": str(response.version)}
    if response.id is not None:
        document["id"] = response.id
    document["outputs"] = entries
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def json_text(array: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    """A BYTES output as strings for JSON. Bytes that are not UTF-8 text cannot travel in JSON, and
    replacing them would corrupt the answer silently, so the caller is told to ask for binary."""
    try:
        text: np.ndarray[Any, Any] = np.vectorize(
            lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object]
        )(array)
    except UnicodeDecodeError:
        raise InvalidInput(
            f"output '{name}' holds bytes that are not UTF-8 text, which JSON cannot carry; "
            "request it as binary data through /v2 (its parameters.binary_data: true)"
        ) from None
    return text

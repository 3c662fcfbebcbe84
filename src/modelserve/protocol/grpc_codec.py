"""Open Inference Protocol tensors over gRPC: typed ``*_contents`` in, raw contents in and out.

Inputs arrive either as typed repeated fields (``fp32_contents``...) or, one entry per input in
order, as ``raw_input_contents`` (the fast path tritonclient uses). Outputs always go back as
``raw_output_contents``, as Triton sends them; every client reads those.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from modelserve.errors import InvalidInput
from modelserve.protocol.raw import from_raw, pack_bytes, reshaped
from modelserve.protocol.shared_memory import Placement, SharedMemoryRegistry
from modelserve.protocol.v2_codec import parse_version
from modelserve.types import InferenceRequest, InferenceResponse, datatype_of, numpy_dtype

# Which typed field carries each datatype. FP16 has none: it travels only as raw contents.
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_infer_request(
    message: service_pb2.ModelInferRequest, shared_memory: SharedMemoryRegistry | None = None
) -> InferenceRequest:
    """A ModelInferRequest as numpy tensors; raw contents become views of the message's bytes, and
    inputs placed in shared memory views of their region. Raw contents hold one entry per input that
    is not in shared memory, in order."""
    # Each read of a repeated field builds its Python wrappers anew: the inputs are read once.
    tensors = list(message.inputs)
    if not tensors:
        raise InvalidInput("the request has no inputs")
    placements = [_placement(t) for t in tensors]
    raw = list(message.raw_input_contents)
    if raw:
        for tensor in tensors:
            if tensor.HasField("contents"):
                # Triton's words, which its clients and examples match on.
                raise InvalidInput(
                    f"contents field must not be specified when using raw_input_contents for '{tensor.name}' "
                    f"for model '{message.model_name}'; send every input's data in one of the two"
                )
        if len(raw) != placements.count(None):
            raise InvalidInput(
                f"raw_input_contents holds {len(raw)} entries for {placements.count(None)} inputs not in shared "
                "memory; send one per input, in order"
            )
    chunks = iter(raw)
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for tensor, placement in zip(tensors, placements, strict=True):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears twice in the request")
        if shape and min(shape) < 0:
            raise InvalidInput(f"input '{name}' has negative dimensions in its shape {shape}")
        try:
            numpy_dtype(datatype)
        except InvalidInput as exc:
            raise InvalidInput(f"input '{name}': {exc.message}") from None
        if placement is not None:
            inputs[name] = _registry(shared_memory, name).read(placement, datatype, shape, name)
        elif raw:
            inputs[name] = from_raw(next(chunks), datatype, shape, name, "raw_input_contents size")
        else:
            inputs[name] = _from_contents(tensor, shape)
    outputs = list(message.outputs)
    for output in outputs:
        if output.parameters and "classification" in output.parameters:
            raise InvalidInput(f"output '{output.name}': classification is not supported by this server")
    return InferenceRequest(
        model=message.model_name,
        inputs=inputs,
        version=parse_version(message.model_version),
        outputs=[o.name for o in outputs] or None,
        id=message.id or None,
        parameters=parameters_of(message),
    )


def output_placements(
    message: service_pb2.ModelInferRequest, shared_memory: SharedMemoryRegistry | None
) -> dict[str, Placement]:
    """The requested outputs to write into shared memory, checked before the model runs."""
    placements = {}
    for output in message.outputs:
        if (placement := _placement(output)) is not None:
            _registry(shared_memory, output.name).check(placement, output.name)
            placements[output.name] = placement
    return placements


def _registry(shared_memory: SharedMemoryRegistry | None, tensor: str) -> SharedMemoryRegistry:
    if shared_memory is None:
        raise InvalidInput(f"tensor '{tensor}': shared memory is not available on this endpoint")
    return shared_memory


def _from_contents(tensor: Any, shape: list[int]) -> np.ndarray[Any, Any]:
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"input '{tensor.name}': {tensor.datatype} travels only in raw_input_contents")
    values = getattr(tensor.contents, field)
    if tensor.datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        array = np.array(values, dtype=numpy_dtype(tensor.datatype))
    if array.size != prod(shape):
        raise InvalidInput(
            f"input '{tensor.name}': {field} holds {array.size} values but shape {shape} needs {prod(shape)}"
        )
    return reshaped(array, shape, tensor.name)


def _placement(tensor: Any) -> Placement | None:
    """Where a tensor's ``shared_memory_*`` parameters place it; most tensors have no parameters at all."""
    return Placement.from_parameters(parameters_of(tensor), tensor.name) if tensor.parameters else None


def parameters_of(holder: Any) -> dict[str, Any]:
    """A message's ``parameters`` map as plain values."""
    if not holder.parameters:
        return {}
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
        for key, value in holder.parameters.items()
    }


def encode_infer_response(
    response: InferenceResponse,
    placements: dict[str, Placement] | None = None,
    shared_memory: SharedMemoryRegistry | None = None,
) -> service_pb2.ModelInferResponse:
    """A ModelInferResponse carrying every output as raw contents, except those written into shared
    memory, which keep an empty raw entry so that clients still find each output at its index."""
    message = service_pb2.ModelInferResponse(
        model_name=response.model, model_version=str(response.version), id=response.id or ""
    )
    for name, array in response.outputs.items():
        datatype = datatype_of(array.dtype)
        output = message.outputs.add(name=name, datatype=datatype, shape=array.shape)
        placement = placements.get(name) if placements else None
        if placement is None:
            # Numbers' raw layout is numpy's own in C order: tobytes() makes the one copy protobuf needs.
            message.raw_output_contents.append(pack_bytes(array) if datatype == "BYTES" else array.tobytes())
            continue
        for key, value in _registry(shared_memory, name).place(placement, array, name).items():
            if isinstance(value, str):
                output.parameters[key].string_param = value
            else:
                output.parameters[key].int64_param = value
        message.raw_output_contents.append(b"")
    return message

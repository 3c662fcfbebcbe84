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
from modelserve.protocol.raw import from_raw, to_raw
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


def decode_infer_request(message: service_pb2.ModelInferRequest) -> InferenceRequest:
    """A ModelInferRequest as numpy tensors; raw contents become views of the message's bytes."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} entries for {len(message.inputs)} inputs; "
            "send one per input, in order"
        )
    if not message.inputs:
        raise InvalidInput("the request has no inputs")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for index, tensor in enumerate(message.inputs):
        if tensor.name in inputs:
            raise InvalidInput(f"input '{tensor.name}' appears twice in the request")
        if "shared_memory_region" in tensor.parameters:
            raise InvalidInput(f"input '{tensor.name}': shared-memory inputs are not supported by this server")
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(f"input '{tensor.name}' has negative dimensions in its shape {shape}")
        try:
            numpy_dtype(tensor.datatype)
        except InvalidInput as exc:
            raise InvalidInput(f"input '{tensor.name}': {exc.message}") from None
        if raw:
            inputs[tensor.name] = from_raw(raw[index], tensor.datatype, shape, tensor.name, "raw_input_contents size")
        else:
            inputs[tensor.name] = _from_contents(tensor, shape)
    for output in message.outputs:
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in output.parameters:
                raise InvalidInput(f"output '{output.name}': {unsupported} is not supported by this server")
    return InferenceRequest(
        model=message.model_name,
        inputs=inputs,
        version=parse_version(message.model_version),
        outputs=[o.name for o in message.outputs] or None,
        id=message.id or None,
        parameters={key: _parameter(value) for key, value in message.parameters.items()},
    )


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
    return array.reshape(shape)


def _parameter(value: Any) -> Any:
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


def encode_infer_response(response: InferenceResponse) -> service_pb2.ModelInferResponse:
    """A ModelInferResponse carrying every output as raw contents."""
    message = service_pb2.ModelInferResponse(
        model_name=response.model, model_version=str(response.version), id=response.id or ""
    )
    for name, array in response.outputs.items():
        message.outputs.add(name=name, datatype=datatype_of(array.dtype), shape=array.shape)
        message.raw_output_contents.append(bytes(to_raw(array)))
    return message

"""Triton's ``triton_python_backend_utils``, which a Python model's model.py imports as ``pb_utils``.

What a ``TritonPythonModel`` handles: tensors, requests, responses and errors; the helpers that read
its model configuration (Triton's JSON); and BLS, requests a model makes from inside ``execute`` to the
other models of its server. Tensors are numpy arrays on the CPU, passed by reference both ways: a BLS
request reaches the other model's batcher in the same process, never serialised.

BLS requests go through the model manager on the server's event loop. ``execute`` runs on an inference
thread, so ``exec()`` hands its request to the loop and blocks that thread (never the loop) until the
answer comes; ``async_exec()`` gives an awaitable for an ``async def execute``. Which server a request
reaches is what the runtime set for the ``execute`` under way (``calls_from``): there is no server-wide
global, so several servers can share a process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelserve.errors import ModelserveError, classify
from modelserve.types import InferenceRequest as CoreRequest
from modelserve.types import InferenceResponse as CoreResponse

__all__ = [
    "TRITON_STRING_TO_NUMPY",
    "InferenceRequest",
    "InferenceResponse",
    "Logger",
    "Tensor",
    "TritonError",
    "TritonModelException",
    "get_input_config_by_name",
    "get_input_tensor_by_name",
    "get_output_config_by_name",
    "get_output_tensor_by_name",
    "numpy_to_triton_type",
    "triton_string_to_numpy",
    "triton_to_numpy_type",
    "using_decoupled_model_transaction_policy",
]

Array = np.ndarray[Any, Any]

TRITON_STRING_TO_NUMPY: dict[str, type[Any]] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
# TRITONSERVER_DataType's numbers (TYPE_BOOL is 1, ... TYPE_STRING 13), as Triton's helpers use them.
_TRITON_NUMBERS = dict(enumerate(TRITON_STRING_TO_NUMPY.values(), start=1))


class TritonModelException(Exception):
    """What a model raises to fail ``initialize``, ``execute`` or ``finalize``; BLS raises it when misused."""


class TritonError:
    """An error a response carries instead of outputs; the codes are Triton's."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        """The error's text."""
        return self._message

    def code(self) -> int:
        """One of the class's codes."""
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code})"


class Tensor:
    """A named numpy array; ``as_numpy`` returns the array itself, not a copy."""

    __slots__ = ("_array", "_name")

    def __init__(self, name: str, array: Array) -> None:
        self._name = name
        self._array = np.asarray(array)

    def name(self) -> str:
        """The tensor's name."""
        return self._name

    def as_numpy(self) -> Array:
        """The tensor's data."""
        return self._array

    def shape(self) -> list[int]:
        """The tensor's shape."""
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        """Always True: tensors here live in host memory."""
        return True

    def to_dlpack(self) -> Any:
        """The data as a DLPack capsule (CPU), for ``torch.utils.dlpack.from_dlpack`` and the like."""
        return self._array.__dlpack__()

    @staticmethod
    def from_dlpack(name: str, tensor: Any) -> Tensor:
        """A tensor sharing the memory of a CPU object that speaks DLPack (a torch tensor, a numpy array)."""
        return Tensor(name, np.from_dlpack(tensor))

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, {self._array.dtype}, {list(self._array.shape)})"


@dataclass(frozen=True, slots=True)
class ModelCalls:
    """How a Python model's BLS requests reach the other models of its server: the loop the server runs
    on, and the manager's ``infer``, which only that loop may call."""

    loop: asyncio.AbstractEventLoop
    infer: Callable[[CoreRequest], Awaitable[CoreResponse]]


_CALLS: ContextVar[ModelCalls | None] = ContextVar("modelserve_model_calls", default=None)


@contextmanager
def calls_from(calls: ModelCalls | None) -> Iterator[None]:
    """BLS requests made in this block (and in tasks it starts) reach ``calls``; None: they are refused."""
    token = _CALLS.set(calls)
    try:
        yield
    finally:
        _CALLS.reset(token)


class InferenceResponse:
    """One request's answer: output tensors, or an error."""

    def __init__(
        self,
        output_tensors: Sequence[Tensor] = (),
        error: TritonError | None = None,
        parameters: dict[str, bool | int | str] | None = None,
    ) -> None:
        self._outputs = list(output_tensors)
        self._error = error
        self._parameters = dict(parameters or {})

    def output_tensors(self) -> list[Tensor]:
        """The outputs, in the order given."""
        return self._outputs

    def has_error(self) -> bool:
        """Whether the response carries an error instead of outputs."""
        return self._error is not None

    def error(self) -> TritonError | None:
        """The error, if any."""
        return self._error

    def parameters(self) -> str:
        """The response's parameters, as a JSON string (Triton's form)."""
        return json.dumps(self._parameters)


class InferenceRequest:
    """A request: the one ``execute`` is handed, or one a model builds to call another model (BLS).

    ``timeout`` is in microseconds, as Triton's; 0 leaves the server's REQUEST_TIMEOUT_SEC alone.
    ``model_version`` -1 is the version the server would pick for a client.
    """

    def __init__(
        self,
        model_name: str | bytes = "",
        inputs: Sequence[Tensor] = (),
        requested_output_names: Sequence[str] = (),
        model_version: int = -1,
        request_id: str = "",
        correlation_id: int | str = 0,
        flags: int = 0,
        timeout: int = 0,
        parameters: dict[str, bool | int | str] | None = None,
    ) -> None:
        # Triton's examples pass a BYTES tensor's element (bytes) as the name; its bindings take both.
        self.model_name = model_name.decode() if isinstance(model_name, bytes) else model_name
        self.model_version = model_version
        self._inputs = list(inputs)
        self._requested = list(requested_output_names)
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._flags = flags
        self._timeout = timeout
        self._parameters = dict(parameters or {})

    def inputs(self) -> list[Tensor]:
        """The input tensors."""
        return self._inputs

    def requested_output_names(self) -> list[str]:
        """The outputs to answer with."""
        return self._requested

    def request_id(self) -> str:
        """The caller's request id ("" when none was sent)."""
        return self._request_id

    def correlation_id(self) -> int | str:
        """The sequence this request belongs to (0: none)."""
        return self._correlation_id

    def flags(self) -> int:
        """Sequence flags (0: none)."""
        return self._flags

    def timeout(self) -> int:
        """The request's timeout in microseconds (0: the server's)."""
        return self._timeout

    def parameters(self) -> str:
        """The request's parameters, as a JSON string (Triton's form)."""
        return json.dumps(self._parameters)

    def is_cancelled(self) -> bool:
        """Always False: a request whose caller has gone is dropped before ``execute`` is called."""
        return False

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        """Run this request on the model it names and wait for the answer (BLS); a failure is the
        response's error, as in Triton."""
        calls = _calls(decoupled)
        return asyncio.run_coroutine_threadsafe(self._run(calls), calls.loop).result()

    def async_exec(self, decoupled: bool = False) -> asyncio.Future[InferenceResponse]:
        """``exec`` for an ``async def execute``: an awaitable of the response."""
        calls = _calls(decoupled)
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            raise TritonModelException("async_exec() is awaited inside an async def execute; use exec()") from None
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._run(calls), calls.loop), loop=here)

    async def _run(self, calls: ModelCalls) -> InferenceResponse:
        parameters: dict[str, Any] = dict(self._parameters)
        if self._timeout:
            parameters["timeout"] = self._timeout  # the V2 timeout parameter is Triton's microseconds too
        request = CoreRequest(
            model=self.model_name,
            inputs={tensor.name(): tensor.as_numpy() for tensor in self._inputs},
            version=self.model_version if self.model_version > 0 else None,
            outputs=self._requested or None,
            id=self._request_id or None,
            parameters=parameters,
        )
        try:
            response = await calls.infer(request)
        except ModelserveError as exc:
            return InferenceResponse(
                error=TritonError(exc.message, _CODES.get(classify(exc).grpc_code, TritonError.INTERNAL))
            )
        return InferenceResponse([Tensor(name, array) for name, array in response.outputs.items()])


# gRPC's codes for our errors (errors.CLASSIFICATION) as TritonError's; any other is INTERNAL.
_CODES = {
    "NOT_FOUND": TritonError.NOT_FOUND,
    "INVALID_ARGUMENT": TritonError.INVALID_ARG,
    "UNAVAILABLE": TritonError.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": TritonError.UNAVAILABLE,
    "DEADLINE_EXCEEDED": TritonError.UNAVAILABLE,
    "CANCELLED": TritonError.CANCELLED,
}


def _calls(decoupled: bool) -> ModelCalls:
    if decoupled:
        raise TritonModelException("decoupled models are not served here, so BLS has no decoupled mode")
    calls = _CALLS.get()
    if calls is None:
        raise TritonModelException(
            "BLS requests are made inside execute (not initialize or finalize) of a model the server runs"
        )
    return calls


class Logger:
    """Triton's model logger, writing to the server's log as ``modelserve.python``."""

    INFO = logging.INFO
    WARNING = logging.WARNING
    ERROR = logging.ERROR
    VERBOSE = logging.DEBUG

    @staticmethod
    def log(message: str, level: int = logging.INFO) -> None:
        """Log ``message`` at ``level`` (one of the class's levels)."""
        _log.log(level, "%s", message)

    @staticmethod
    def log_info(message: str) -> None:
        """Log at INFO."""
        _log.info("%s", message)

    @staticmethod
    def log_warn(message: str) -> None:
        """Log at WARNING."""
        _log.warning("%s", message)

    @staticmethod
    def log_error(message: str) -> None:
        """Log at ERROR."""
        _log.error("%s", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        """Log at Triton's VERBOSE, which is DEBUG here."""
        _log.debug("%s", message)


_log = logging.getLogger("modelserve.python")


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    """The request's input called ``name``, or None."""
    return next((tensor for tensor in request.inputs() if tensor.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    """The response's output called ``name``, or None."""
    return next((tensor for tensor in response.output_tensors() if tensor.name() == name), None)


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The ``input`` entry of Triton's JSON model configuration called ``name``, or None."""
    return next((entry for entry in model_config.get("input", []) if entry["name"] == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The ``output`` entry of Triton's JSON model configuration called ``name``, or None."""
    return next((entry for entry in model_config.get("output", []) if entry["name"] == name), None)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    """Whether the configuration asks for decoupled mode: never, for a model served here."""
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


def triton_string_to_numpy(triton_type: str) -> type[Any]:
    """The numpy type of a configuration's ``data_type`` (``TYPE_FP32`` → ``np.float32``)."""
    return TRITON_STRING_TO_NUMPY[triton_type]


def triton_to_numpy_type(number: int) -> type[Any] | None:
    """The numpy type of a TRITONSERVER_DataType number, or None for one it has no numpy type for."""
    return _TRITON_NUMBERS.get(number)


def numpy_to_triton_type(dtype: Any) -> int | None:
    """The TRITONSERVER_DataType number of a numpy type (bytes and objects: TYPE_STRING), or None."""
    kind = np.dtype(dtype)
    if kind.kind in "OSU":
        return 13
    return next((number for number, known in _TRITON_NUMBERS.items() if np.dtype(known) == kind), None)

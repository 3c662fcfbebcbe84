"""The OpenAPI document at ``/openapi.json``: FastAPI's, completed with what FastAPI cannot see.

Inference is answered by the ASGI front door before FastAPI runs (server/asgi.py), and its handlers
read their bodies themselves, so FastAPI knows neither their request bodies nor their answers. The
types below exist only to be written into the document: no request is ever validated against them,
so describing the API costs nothing per request. FastAPI also documents a 422 for every route with
parameters, but the server answers validation failures with 400 ``{"error": ...}`` (server/app.py);
the document says what the server does.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, NotRequired

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import Field, TypeAdapter, WithJsonSchema
from typing_extensions import TypedDict

from modelserve.types import DATATYPE_TO_NUMPY

_REF = "#/components/schemas/{model}"

# What FastAPI's ``responses=`` takes: status → {"model": type, "description": ..., "content": ...}.
Responses = dict[int | str, dict[str, Any]]

Datatype = Annotated[
    str,
    WithJsonSchema(
        {"type": "string", "enum": list(DATATYPE_TO_NUMPY), "description": "An Open Inference Protocol datatype."}
    ),
]
Dimension = Annotated[int, Field(ge=0)]
TensorData = Annotated[
    list[bool | float | str | list[Any]],
    Field(description="The elements in row-major order, flat or nested; strings for BYTES."),
]
Version = Annotated[
    str | int | None,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^(0*[1-9][0-9]*)?$"},
                {"type": "integer", "minimum": 1},
                {"type": "null"},
            ],
            "description": "A positive version number; left out, the newest loaded version serves.",
        }
    ),
]


class Error(TypedDict):
    """Every refusal: what went wrong and what to fix."""

    error: str
    trace_id: Annotated[
        str, Field(description="The request's trace id, also in the X-Trace-Id header: its log lines carry it.")
    ]


class OpenAIErrorObject(TypedDict):
    """OpenAI's error object, as its API and its SDKs know it."""

    message: str
    type: Annotated[str, Field(description="invalid_request_error, authentication_error, rate_limit_error, ...")]
    param: str | None
    code: Annotated[str | None, Field(description="model_not_found for an unknown model")]


class OpenAIError(TypedDict):
    """A refusal of the OpenAI-compatible routes: OpenAI's error object under ``error``."""

    error: OpenAIErrorObject
    trace_id: Annotated[
        str, Field(description="The request's trace id, also in the X-Trace-Id header: its log lines carry it.")
    ]


class InputParameters(TypedDict, total=False):
    """Where an input's data is when not in 'data': the binary part of the body, or shared memory."""

    binary_data_size: Annotated[int, Field(ge=0, description="Bytes of this input in the binary part.")]
    shared_memory_region: Annotated[str, Field(description="A registered system shared-memory region.")]
    shared_memory_byte_size: Dimension
    shared_memory_offset: Dimension


class RequestInput(TypedDict):
    """One input tensor."""

    name: str
    shape: list[Dimension]
    datatype: Datatype
    parameters: NotRequired[InputParameters | None]
    data: NotRequired[TensorData]


class OutputParameters(TypedDict, total=False):
    """How one output comes back: as raw bytes after the JSON header, or written into shared memory."""

    binary_data: bool
    shared_memory_region: str
    shared_memory_byte_size: Dimension
    shared_memory_offset: Dimension


class RequestOutput(TypedDict):
    """An output the caller wants; without 'outputs', every output comes back."""

    name: str
    parameters: NotRequired[OutputParameters | None]


class RequestParameters(TypedDict, total=False):
    """Options of the whole request."""

    binary_data_output: Annotated[bool, Field(description="Every output as raw bytes unless it says otherwise.")]


class InferenceRequest(TypedDict):
    """The Open Inference Protocol's JSON inference request (the binary tensor extension's JSON header)."""

    id: NotRequired[str | None]
    parameters: NotRequired[RequestParameters | None]
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: NotRequired[list[RequestOutput] | None]


class ResponseOutput(TypedDict):
    """One output tensor: 'data' in JSON, or 'parameters' saying where its bytes are."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: NotRequired[dict[str, Any]]
    data: NotRequired[list[bool | float | str]]


class InferenceResponse(TypedDict):
    """The Open Inference Protocol's JSON inference response."""

    model_name: str
    model_version: str
    id: NotRequired[str]
    outputs: list[ResponseOutput]


class PredictRequest(TypedDict):
    """/v1/predict: values typed by the model's own inputs, so no datatype or shape to spell."""

    model: str
    version: NotRequired[Version]
    inputs: Annotated[
        TensorData | dict[str, TensorData],
        Field(description="A nested list for a model of one input, else an object keyed by input name."),
    ]


class PredictResponse(TypedDict):
    """The outputs as nested lists, by name."""

    model: str
    version: str
    outputs: dict[str, Any]
    latency_ms: float


class Live(TypedDict):
    """The process answers (and its memory is below MEMORY_HARD_LIMIT_MB), or why not."""

    live: bool
    error: NotRequired[str]


class Ready(TypedDict):
    """Whether the server accepts inference, and why not."""

    ready: bool
    error: NotRequired[str]


class ServerMetadata(TypedDict):
    """What the server is, and the protocol extensions it speaks."""

    name: str
    version: str
    extensions: list[str]


class MetadataTensor(TypedDict):
    """An input or output of a model; -1 in its shape where any size is accepted."""

    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(TypedDict):
    """A model's versions, platform and tensors."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ModelReady(TypedDict):
    """The model serves."""

    name: str
    ready: bool


class RegionRegistration(TypedDict):
    """A POSIX shared-memory object under /dev/shm, and the byte range of it the region covers."""

    key: str
    offset: NotRequired[Dimension]
    byte_size: Annotated[int, Field(ge=1)]


class RegionStatus(TypedDict):
    """A registered system shared-memory region."""

    name: str
    key: str
    offset: int
    byte_size: int


class CudaRegionRegistration(TypedDict):
    """What Triton's clients send to register a CUDA region: a cudaIpcMemHandle_t, base64-encoded."""

    raw_handle: dict[str, str]
    device_id: Dimension
    byte_size: Annotated[int, Field(ge=1)]


class CudaRegionStatus(TypedDict):
    """A registered CUDA shared-memory region, as Triton lists one."""

    name: str
    device_id: int
    byte_size: int


CudaRegions = Annotated[
    list[CudaRegionStatus],
    Field(max_length=0, description="Always empty: no CUDA shared-memory region can be registered here."),
]


class Health(TypedDict):
    """starting or draining (503), healthy, or degraded when a model failed to load (200)."""

    status: str
    models_loaded: list[str]
    models_failed: dict[str, str]
    uptime_seconds: float
    version: str


class Probe(TypedDict):
    """A probe's answer, and the reason when it is 503."""

    status: str
    reason: NotRequired[str]


class ModelLoaded(TypedDict):
    """/v1: the model loaded, and the versions it now serves."""

    model: str
    format: str | None
    status: str
    load_time_seconds: float
    versions: list[str]


class ModelUnloaded(TypedDict):
    """/v1: the model no longer serves."""

    model: str
    status: str


# The request bodies FastAPI does not see: written into the document's components here.
REQUEST_BODIES: tuple[type, ...] = (InferenceRequest, PredictRequest)

_DESCRIPTIONS = {
    400: "The request is malformed: the message names what to fix",
    404: "No such model, version or region",
    409: "Another profile is being recorded",
    413: "The body is larger than the server accepts",
    429: "The model's queue is full; retry after Retry-After seconds",
    500: "The model raised while running",
    503: "The model is known but cannot serve now (not loaded, loading or failed); the message says why",
    504: "The request did not finish within REQUEST_TIMEOUT_SEC",
    507: "The model cannot be loaded for lack of memory (budget or soft limit); the message names what holds it",
}


# Authentication is a server setting, not a property of a route: any route may answer these when it is on,
# except the open ones (AUTH_OPEN_ENDPOINTS), which the document cannot know.
BEARER = "bearer"
_BEARER = "An API key (API_KEYS) or a JWT (JWT_*), when authentication is on; without it, nothing to send."
_CHALLENGE = {
    "WWW-Authenticate": {"description": "RFC 6750's challenge: why, and the scope needed", "schema": {"type": "string"}}
}
_REFUSALS = {
    str(status): {
        "description": description,
        "headers": _CHALLENGE,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }
    for status, description in (
        (401, "Authentication is on and the request sends no credentials, or ones the server does not accept"),
        (
            403,
            "The credentials are valid but lack the scope the route needs (admin for control, shared memory, /debug)",
        ),
    )
}


def errors(*statuses: int) -> Responses:
    """The ``responses`` of a route that refuses with these statuses, each with an ``{"error": ...}`` body."""
    return {status: {"model": Error, "description": _DESCRIPTIONS[status]} for status in statuses}


def openai_errors(*statuses: int) -> Responses:
    """The ``responses`` of an OpenAI-compatible route that refuses with these statuses."""
    return {status: {"model": OpenAIError, "description": _DESCRIPTIONS[status]} for status in statuses}


def responses(answer: Any, *statuses: int) -> Responses:
    """A route's documented answers: ``answer`` as its 200 body (None: any JSON), then its refusals."""
    documented: Responses = {} if answer is None else {200: {"model": answer}}
    return {**documented, **errors(*statuses)}


def schema_of(body: Any) -> dict[str, Any]:
    """The JSON schema of a small type with no nested definitions, for :func:`request_body`."""
    return TypeAdapter(body).json_schema()


def request_body(schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself (so FastAPI cannot document it)."""
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": required, "description": description, "content": content}}


def inference_body(path: str, model: type, *, binary: bool) -> dict[str, Any]:
    """``openapi_extra`` of the inference route at ``path``: its path parameters and JSON body (from
    ``REQUEST_BODIES``), which its handler reads itself, and for V2 the binary tensor extension as an
    alternative content type, both ways."""
    extra = request_body({"$ref": _REF.format(model=model.__name__)}, model.__doc__ or "", required=True)
    extra["parameters"] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if binary:
        header_length = {
            "description": "Length of the JSON header when binary tensor data follows it.",
            "schema": {"type": "integer", "minimum": 0},
        }
        extra["requestBody"]["content"]["application/octet-stream"] = _binary(
            "A JSON InferenceRequest of Inference-Header-Content-Length bytes, then each binary input's raw bytes "
            "in input order (BYTES elements as a 4-byte little-endian length and the bytes)."
        )
        extra["parameters"].append(
            {"name": "Inference-Header-Content-Length", "in": "header", "required": False, **header_length}
        )
        extra["responses"] = {
            "200": {
                "content": {
                    "application/octet-stream": _binary(
                        "A JSON InferenceResponse of Inference-Header-Content-Length bytes, then the raw bytes "
                        "of each output asked for as binary data."
                    )
                },
                "headers": {"Inference-Header-Content-Length": header_length},
            }
        }
    return extra


def _binary(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary", "description": description}}


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document of ``app``, with the inference request bodies, the bearer credentials and their
    refusals (401, 403) of a server with authentication on, and without the 422s it never sends."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, definitions = TypeAdapter.json_schemas(
        [(model, "validation", TypeAdapter(model)) for model in REQUEST_BODIES], ref_template=_REF
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions["$defs"])
    schema["components"]["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer", "description": _BEARER}}
    for path in schema["paths"].values():
        for operation in path.values():
            operation["responses"].pop("422", None)
            operation["responses"].update(_REFUSALS)
            operation["security"] = [{}, {BEARER: []}]  # credentials only when authentication is on
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def serve_document(app: FastAPI) -> None:
    """Make ``app`` answer ``/openapi.json`` and ``/docs`` with :func:`document`, built on first use."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""The Open Inference Protocol (KServe V2) over HTTP, with Triton's statistics and repository extensions.

Inference is answered by the ASGI front door with no pydantic on tensors, orjson and numpy views only;
its route is registered here for the OpenAPI document (protocol/openapi.py) and method errors. The
metadata and control endpoints are plain FastAPI routes.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelserve import __version__
from modelserve.errors import InvalidInput
from modelserve.protocol import openapi
from modelserve.protocol.compression import compressed
from modelserve.protocol.errors import error_response
from modelserve.protocol.http import (
    Endpoint,
    RawResponse,
    hang_up,
    header,
    json_body,
    json_response,
    read_body,
)
from modelserve.protocol.shared_memory import SharedMemory
from modelserve.protocol.v2_codec import decode_request, decompress_body, encode_response, parse_version
from modelserve.protocol.v2_documents import (
    EXTENSIONS,
    model_config,
    model_metadata,
    model_statistics,
    repository_entry,
)
from modelserve.repository.overrides import from_parameters
from modelserve.server.state import ServerState

_CONTROL_BODY_LIMIT = 1024 * 1024
HEADER_LENGTH = b"inference-header-content-length"  # the binary extension's header, as ASGI spells names


def infer_endpoint(state: ServerState, shared_memory: SharedMemory) -> Endpoint:
    """``POST /v2/models/{model}[/versions/{version}]/infer``: the hot path, with no pydantic on tensors.
    It answers every error itself, so the ASGI front door can call it without FastAPI around it."""
    manager, tracing = state.manager, state.tracing

    async def infer(request: Request) -> Response:
        if not tracing.enabled:
            return await answer(request)
        attributes = {"http.request.method": "POST", "url.path": request.scope["path"], "modelserve.protocol": "http"}
        with tracing.request("POST /v2/models/{model}/infer", request.headers, attributes):
            return await answer(request)

    async def answer(request: Request) -> Response:
        started = time.perf_counter()
        scope = request.scope
        model = scope["path_params"]["model"]
        label, version = model, ""
        try:
            with tracing.span("admission"):
                version_number = parse_version(scope["path_params"].get("version"))
                # An unknown or unready model is refused (or, on demand, loaded) before the body is read.
                if manager.ready_version(model, version_number) is None:
                    await manager.obtain(model, version_number)
                body = await read_body(request, state.settings.max_input_bytes)
                if (encoding := header(scope, b"content-encoding")) is not None:
                    body = await decompress_body(body, encoding, state.settings.max_input_bytes)
                infer_request, form = decode_request(
                    body,
                    _header_length(header(scope, HEADER_LENGTH)),
                    model,
                    version_number,
                    shared_memory.system,
                )
            result = await manager.infer(infer_request, gone=hang_up(request))
            with tracing.span("encode"):
                payload, header_length = encode_response(result, form, shared_memory.system)
        except Exception as exc:
            response = error_response(exc)
            elapsed = time.perf_counter() - started
            state.finish_request(label, version, "http", response.status_code, elapsed, exc)
            return response
        state.finish_request(label, str(result.version), "http", 200, time.perf_counter() - started)
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if header_length is not None:
            extra = ((HEADER_LENGTH, str(header_length).encode()),)
        payload, encoding = await compressed(payload, header(scope, b"accept-encoding"))
        if encoding is not None:
            extra = (*extra, (b"content-encoding", encoding.encode()), (b"vary", b"accept-encoding"))
        kind = b"application/json" if header_length is None else b"application/octet-stream"
        return RawResponse(payload, kind, extra)

    return infer


def router(state: ServerState, shared_memory: SharedMemory) -> APIRouter:
    """Every V2 route, bound to one server's state and shared-memory regions."""
    manager = state.manager
    api = APIRouter(tags=["Open Inference Protocol (V2)"])
    model_errors = openapi.errors(400, 404, 503, 507)  # 507: an on-demand load that does not fit
    control_errors = openapi.errors(400, 404, 413, 507)

    infer = infer_endpoint(state, shared_memory)
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        # Documentation only: the front door answers these before FastAPI routes anything.
        api.add_api_route(
            path,
            infer,
            methods=["POST"],
            summary="Run inference: JSON tensors, or binary tensor data after a JSON header",
            responses=openapi.responses(openapi.InferenceResponse, 400, 404, 413, 429, 500, 503, 504, 507),
            openapi_extra=openapi.inference_body(path, openapi.InferenceRequest, binary=True),
        )

    @api.get(
        "/v2/health/live",
        summary="The server process answers, below MEMORY_HARD_LIMIT_MB",
        responses={
            200: {"model": openapi.Live},
            503: {"model": openapi.Live, "description": "Above MEMORY_HARD_LIMIT_MB, and by how much"},
        },
    )
    async def live() -> Response:
        if (reason := state.not_live()) is not None:
            return json_response({"live": False, "error": reason}, 503)
        return json_response({"live": True})

    @api.get(
        "/v2/health/ready",
        summary="Startup loading has finished and the server accepts inference",
        responses={200: {"model": openapi.Ready}, 503: {"model": openapi.Ready, "description": "Not ready, and why"}},
    )
    async def ready() -> Response:
        if (reason := state.not_ready()) is not None:
            return json_response({"ready": False, "error": reason}, 503)
        return json_response({"ready": True})

    @api.get("/v2", summary="Server metadata", responses=openapi.responses(openapi.ServerMetadata))
    async def server_metadata() -> Response:
        return json_response({"name": "modelserve", "version": __version__, "extensions": EXTENSIONS})

    @api.get("/v2/models/stats", summary="Statistics of every loaded model")
    async def all_statistics() -> Response:
        return json_response(model_statistics(manager.ready()))

    @api.get(
        "/v2/models/{model}/stats",
        summary="Statistics of a model's loaded versions",
        responses=openapi.errors(400, 404, 503),
    )
    @api.get(
        "/v2/models/{model}/versions/{version}/stats",
        summary="Statistics of one model version",
        responses=model_errors,
    )
    async def statistics(model: str, version: str | None = None) -> Response:
        return json_response(model_statistics(await manager.serving(model, parse_version(version))))

    metadata_responses = openapi.responses(openapi.ModelMetadata, 400, 404, 503, 507)

    @api.get("/v2/models/{model}", summary="Model metadata", responses=metadata_responses)
    @api.get("/v2/models/{model}/versions/{version}", summary="Model version metadata", responses=metadata_responses)
    async def metadata(model: str, version: str | None = None) -> Response:
        record = await manager.obtain(model, parse_version(version))
        return json_response(model_metadata(model, await manager.versions(model), record))

    ready_responses = openapi.responses(openapi.ModelReady, 400, 404, 503)

    @api.get(
        "/v2/models/{model}/ready",
        summary="200 when the model serves, 503 (with why) when not",
        responses=ready_responses,
    )
    @api.get(
        "/v2/models/{model}/versions/{version}/ready",
        summary="200 when this version serves",
        responses=ready_responses,
    )
    async def model_ready(model: str, version: str | None = None) -> Response:
        await manager.find(model, parse_version(version))
        return json_response({"name": model, "ready": True})

    @api.get(
        "/v2/models/{model}/config",
        summary="Model configuration, in Triton's JSON form",
        responses=model_errors,
    )
    @api.get(
        "/v2/models/{model}/versions/{version}/config",
        summary="Model version configuration",
        responses=model_errors,
    )
    async def config(model: str, version: str | None = None) -> Response:
        return json_response(model_config(await manager.obtain(model, parse_version(version))))

    @api.post(
        "/v2/repository/index",
        summary="Every model in the repository, with its state",
        responses=openapi.responses(None, 400, 413),
        openapi_extra=openapi.request_body(
            {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            'Optional; {"ready": true} lists only the models that serve.',
        ),
    )
    async def repository_index(request: Request) -> Response:
        body = await json_body(request, _CONTROL_BODY_LIMIT)
        only_ready = bool(body.get("ready", False)) if isinstance(body, dict) else False
        entries = [e for e in await manager.index() if not only_ready or e.state.value == "READY"]
        return json_response([repository_entry(e) for e in entries])

    @api.post(
        "/v2/repository/models/{model}/load",
        summary="Load or reload a model",
        response_class=Response,
        responses=control_errors,
        openapi_extra=openapi.request_body(
            {
                "type": "object",
                "properties": {
                    "parameters": {
                        "type": "object",
                        "properties": {"config": {"type": "string"}},
                        "additionalProperties": {"type": "string"},
                    }
                },
            },
            "Optional: `config`, Triton's JSON model configuration to serve the model with; with it, "
            "`file:<version>/<name>` parameters carrying the model's files in base64.",
        ),
    )
    async def load(model: str, request: Request) -> Response:
        body = await json_body(request, state.settings.max_input_bytes)
        parameters = body.get("parameters") if isinstance(body, dict) else None
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidInput(f"failed to load '{model}': parameters must be a JSON object")
        config, files = from_parameters(model, parameters or {}, base64_files=True)
        await manager.load(model, config, files)
        return Response(status_code=200)

    @api.post(
        "/v2/repository/models/{model}/unload",
        summary="Unload a model after its queued requests finish",
        response_class=Response,
        responses=control_errors,
        openapi_extra=openapi.request_body({"type": "object"}, "Optional, and ignored."),
    )
    async def unload(model: str, request: Request) -> Response:
        await json_body(request, _CONTROL_BODY_LIMIT)
        await manager.unload(model)
        return Response(status_code=200)

    @api.get(
        "/v2/systemsharedmemory/status",
        summary="Every registered system shared-memory region",
        responses=openapi.responses(list[openapi.RegionStatus], 400),
    )
    @api.get(
        "/v2/systemsharedmemory/region/{region}/status",
        summary="One system shared-memory region",
        responses=openapi.responses(list[openapi.RegionStatus], 400),
    )
    async def shared_memory_status(region: str | None = None) -> Response:
        return json_response(shared_memory.system.status(region))

    @api.post(
        "/v2/systemsharedmemory/region/{region}/register",
        summary="Register a system shared-memory region",
        response_class=Response,
        responses=openapi.errors(400, 413),
        openapi_extra=openapi.request_body(openapi.schema_of(openapi.RegionRegistration), "Where the region is."),
    )
    async def shared_memory_register(region: str, request: Request) -> Response:
        body = await json_body(request, _CONTROL_BODY_LIMIT)
        if not isinstance(body, dict):
            raise InvalidInput('send {"key": "/name", "offset": 0, "byte_size": N}')
        shared_memory.system.register(region, body.get("key", ""), body.get("offset", 0), body.get("byte_size", 0))
        return Response(status_code=200)

    @api.post(
        "/v2/systemsharedmemory/unregister",
        summary="Unregister every system shared-memory region",
        response_class=Response,
    )
    @api.post(
        "/v2/systemsharedmemory/region/{region}/unregister",
        summary="Unregister one region",
        response_class=Response,
    )
    async def shared_memory_unregister(region: str | None = None) -> Response:
        shared_memory.system.unregister(region)
        return Response(status_code=200)

    cuda = shared_memory.cuda

    @api.get(
        "/v2/cudasharedmemory/status",
        summary="Every registered CUDA shared-memory region: none, as Triton without GPU support answers",
        responses=openapi.responses(openapi.CudaRegions, 400),
    )
    @api.get(
        "/v2/cudasharedmemory/region/{region}/status",
        summary="One CUDA shared-memory region: none is ever registered, so 400 as for an unknown system region",
        responses=openapi.errors(400),
    )
    async def cuda_shared_memory_status(region: str | None = None) -> Response:
        return json_response(cuda.status(region))

    @api.post(
        "/v2/cudasharedmemory/region/{region}/register",
        summary="Register a CUDA shared-memory region: refused (400), this server has no GPU path for it",
        response_class=Response,
        responses={
            400: {
                "model": openapi.Error,
                "description": "Always: the message says why, and to use system shared memory",
            }
        },
        openapi_extra=openapi.request_body(
            openapi.schema_of(openapi.CudaRegionRegistration), "What Triton's clients send; refused whatever it holds."
        ),
    )
    async def cuda_shared_memory_register(region: str) -> Response:
        cuda.register(region)

    @api.post(
        "/v2/cudasharedmemory/unregister",
        summary="Unregister every CUDA shared-memory region: none is ever registered, so nothing to do",
        response_class=Response,
    )
    @api.post(
        "/v2/cudasharedmemory/region/{region}/unregister",
        summary="Unregister one CUDA shared-memory region: none is ever registered, so nothing to do",
        response_class=Response,
    )
    async def cuda_shared_memory_unregister(region: str | None = None) -> Response:
        cuda.unregister(region)
        return Response(status_code=200)

    return api


def _header_length(value: str | None) -> int | None:
    if value is None:
        return None
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit()):  # isdigit() alone admits '³', which int() cannot read
        raise InvalidInput(f"Inference-Header-Content-Length {value!r} is not a number")
    return int(digits)

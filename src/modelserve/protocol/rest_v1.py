"""The runbooks' simple API, a thin alias over the same core as V2.

``POST /v1/predict`` takes nested lists and answers nested lists, typed by the model's own inputs,
so a curl line needs no datatype or shape. Load and unload answer what the runbooks show.
"""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from modelserve.errors import InvalidInput
from modelserve.models.records import ModelVersion
from modelserve.models.spec import ModelSpec
from modelserve.protocol import openapi
from modelserve.protocol.errors import error_response
from modelserve.protocol.http import Endpoint, hang_up, json_response, read_body
from modelserve.protocol.v2_codec import json_array, json_text, parse_version
from modelserve.repository.config import Platform
from modelserve.server.state import ServerState
from modelserve.types import InferenceRequest, datatype_of


class ModelFormat(StrEnum):
    """The formats the runbooks name in ``?model_format=``."""

    onnx = "onnx"
    torchscript = "torchscript"
    sklearn = "sklearn"
    tensorrt = "tensorrt"


def predict_endpoint(state: ServerState) -> Endpoint:
    """``POST /v1/predict``: answers every error itself, so the ASGI front door can call it directly."""
    manager, tracing = state.manager, state.tracing
    attributes = {"http.request.method": "POST", "url.path": "/v1/predict", "modelserve.protocol": "http_v1"}

    async def predict(request: Request) -> Response:
        with tracing.request("POST /v1/predict", request.headers, attributes):
            return await answer(request)

    async def answer(request: Request) -> Response:
        started = time.perf_counter()
        label, version = "unknown", ""
        try:
            with tracing.span("admission"):
                document = _parse(await read_body(request, state.settings.max_input_bytes))
                model = label = document["model"]
                asked = parse_version(document.get("version"))
                record = await manager.obtain(model, asked)
                assert record.spec is not None
                inputs = _inputs(record.spec, document["inputs"])
            # The version asked for, not the one looked up: one naming none is the manager's to route.
            infer_request = InferenceRequest(model=model, inputs=inputs, version=asked)
            result = await manager.infer(infer_request, gone=hang_up(request))
            version = str(result.version)
            with tracing.span("encode"):
                outputs = {name: _jsonable(name, array) for name, array in result.outputs.items()}
        except Exception as exc:
            response = error_response(exc)
            elapsed = time.perf_counter() - started
            state.finish_request(label, version, "http_v1", response.status_code, elapsed, exc)
            return response
        elapsed = time.perf_counter() - started
        state.finish_request(label, version, "http_v1", 200, elapsed)
        body = {"model": model, "version": version, "outputs": outputs, "latency_ms": round(elapsed * 1000, 3)}
        return json_response(body)

    return predict


def router(state: ServerState) -> APIRouter:
    """The /v1 routes, bound to one server's state."""
    manager = state.manager
    api = APIRouter(tags=["Runbook API (/v1)"])

    # Documentation only: the front door answers this route before FastAPI routes anything.
    api.add_api_route(
        "/v1/predict",
        predict_endpoint(state),
        methods=["POST"],
        summary="Run inference on nested lists, typed by the model's inputs",
        responses=openapi.responses(openapi.PredictResponse, 400, 404, 413, 429, 500, 503, 504, 507),
        openapi_extra=openapi.inference_body("/v1/predict", openapi.PredictRequest, binary=False),
    )

    @api.post(
        "/v1/models/{name}/load",
        summary="Load a model from the repository",
        responses=openapi.responses(openapi.ModelLoaded, 400, 404, 507),
    )
    async def load(name: str, model_format: ModelFormat | None = Query(None)) -> Response:  # noqa: B008
        if model_format is not None:
            source = await asyncio.to_thread(manager.repository.source, name)
            if source.platform != Platform(model_format.value):
                raise InvalidInput(
                    f"model '{name}' is {source.platform.value} in the repository, not {model_format.value}; "
                    f"use model_format={source.platform.value} or leave it out"
                )
        started = time.perf_counter()
        ready = await manager.load(name)
        return json_response(
            {
                "model": name,
                "format": _platform(ready),
                "status": "loaded",
                "load_time_seconds": round(time.perf_counter() - started, 3),
                "versions": [str(v.version) for v in ready],
            }
        )

    @api.post(
        "/v1/models/{name}/unload",
        summary="Unload a model after its queued requests finish",
        responses=openapi.responses(openapi.ModelUnloaded, 400, 404),
    )
    async def unload(name: str) -> Response:
        await manager.unload(name)
        return json_response({"model": name, "status": "unloaded"})

    return api


def _platform(ready: list[ModelVersion]) -> str | None:
    """The platform the served versions run on (all versions of a model share one)."""
    return ready[-1].spec.platform.value if ready and ready[-1].spec is not None else None


def _parse(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("model"), str) or "inputs" not in document:
        raise InvalidInput('send {"model": name, "inputs": <nested list> or {input_name: <nested list>}}')
    return document


def _inputs(spec: ModelSpec, data: Any) -> dict[str, np.ndarray[Any, Any]]:
    if not isinstance(data, dict):
        if len(spec.inputs) != 1:
            names = ", ".join(s.name for s in spec.inputs)
            raise InvalidInput(f"model '{spec.name}' has {len(spec.inputs)} inputs ({names}); key 'inputs' by name")
        data = {spec.inputs[0].name: data}
    return {name: json_array(values, spec.input(name).datatype, name) for name, values in data.items()}


def _jsonable(name: str, array: np.ndarray[Any, Any]) -> Any:
    if datatype_of(array.dtype) == "BYTES":
        return json_text(array, name).tolist()
    return np.ascontiguousarray(array)

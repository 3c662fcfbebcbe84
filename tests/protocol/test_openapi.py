"""/openapi.json describes the whole HTTP API: every route, the inference bodies FastAPI never parses,
and the statuses and ``{"error": ...}`` bodies the server really answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from modelserve.protocol.errors import OPENAI_PATHS
from tests.protocol.serving import TestClient

INFERENCE = {
    "/v2/models/{model}/infer": "InferenceRequest",
    "/v2/models/{model}/versions/{version}/infer": "InferenceRequest",
    "/v1/predict": "PredictRequest",
}
# FastAPI's own pages: the document itself and the pages that render it.
UNDOCUMENTED = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def test_every_route_is_documented_with_its_methods(client: TestClient, document: dict[str, Any]) -> None:
    app = client.app.app  # type: ignore[attr-defined]  # the FastAPI app behind the front door
    assert isinstance(app, FastAPI)
    served = {
        (route.path, method.lower())
        for route in iter_route_contexts(app.routes)  # included routers' routes, as FastAPI sees them
        if route.path is not None and route.path not in UNDOCUMENTED
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert len(served) > 30

    documented = {(path, method) for path, item in document["paths"].items() for method in item}

    assert served == documented


@pytest.mark.parametrize(("path", "body"), INFERENCE.items())
def test_inference_routes_document_their_body_and_answers(document: dict[str, Any], path: str, body: str) -> None:
    operation = document["paths"][path]["post"]

    content = operation["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{body}"}
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "413", "429", "500", "503", "504", "507"}
    path_parameters = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
    assert path_parameters == set(re.findall(r"{(\w+)}", path))
    if path.startswith("/v2"):
        assert "application/octet-stream" in content
        assert "application/octet-stream" in operation["responses"]["200"]["content"]


def test_the_v2_request_schema_lists_the_protocol_datatypes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    request_input = schemas["RequestInput"]
    assert set(request_input["required"]) == {"name", "shape", "datatype"}
    assert "FP32" in request_input["properties"]["datatype"]["enum"]
    assert "BYTES" in request_input["properties"]["datatype"]["enum"]
    assert request_input["properties"]["shape"]["items"] == {"type": "integer", "minimum": 0}
    assert schemas["InferenceRequest"]["required"] == ["inputs"]
    assert set(schemas["PredictRequest"]["required"]) == {"model", "inputs"}


def test_errors_are_documented_as_the_server_answers_them(document: dict[str, Any]) -> None:
    """Ours everywhere, OpenAI's error object on the OpenAI-compatible routes (authentication's refusals,
    answered before any route, are ours there too)."""
    for path, item in document["paths"].items():
        for operation in item.values():
            responses = operation["responses"]
            assert "422" not in responses, "validation failures answer 400"
            for status in ("400", "401", "403", "404", "413", "429", "504"):
                kind = "OpenAIError" if path in OPENAI_PATHS and status not in ("401", "403") else "Error"
                if status in responses:
                    schema = responses[status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": f"#/components/schemas/{kind}"}, (path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_operation_documents_the_refusals_of_authentication(document: dict[str, Any]) -> None:
    """Authentication is a server setting, so every operation may be refused when it is on, and none needs
    credentials when it is off: the bearer scheme is optional."""
    schemes = document["components"]["securitySchemes"]
    assert list(schemes) == ["bearer"]
    assert (schemes["bearer"]["type"], schemes["bearer"]["scheme"]) == ("http", "bearer")
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["security"] == [{}, {"bearer": []}]
            for status in ("401", "403"):
                refusal = operation["responses"][status]
                assert refusal["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                assert "WWW-Authenticate" in refusal["headers"]


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    references = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', str(document).replace("'", '"'))

    assert references
    assert set(references) <= set(document["components"]["schemas"])


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    schemathesis.openapi.from_dict(document).validate()


def test_validation_failures_answer_400_as_documented(client: TestClient, document: dict[str, Any]) -> None:
    assert "400" in document["paths"]["/v1/models/{name}/load"]["post"]["responses"]

    response = client.post("/v1/models/mlp/load?model_format=caffe")

    assert response.status_code == 400
    assert list(response.json()) == ["error", "trace_id"]

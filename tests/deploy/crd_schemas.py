"""Structural schemas of the custom kinds the deploy files use.

kubernetes-validate bundles only built-in kinds. PrometheusRule's schema is the Prometheus Operator's own
CRD, and KServe's (ClusterServingRuntime, InferenceService) and Flagger's (Canary, MetricTemplate) are
theirs, vendored in ``schemas/`` (its README says from where); ServiceMonitor's describes the fields we
use, with the types and patterns its CRD gives them (monitoring.coreos.com/v1), and a field the CRD has
and it lacks is added here when a manifest needs it. Unknown fields are refused in all of them: a
misspelt ``endpoints`` or ``scrapeTimout`` fails instead of being ignored by the API server's pruning.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).parent / "schemas"

# The operator's Duration type.
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}
LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


def _kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


SERVICE_MONITOR = _kind(
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
            "jobLabel": {"type": "string"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"type": ["integer", "string"]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
)


def _strict(schema: Any) -> Any:
    """The CRD's schema, refusing unknown fields wherever it lists the fields (`kubectl apply --validate=strict`)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    listed = "properties" in schema and "additionalProperties" not in schema
    if listed and not schema.get("x-kubernetes-preserve-unknown-fields"):
        strict["additionalProperties"] = False
    return strict


def vendored(file_name: str, version: str, kind: str | None = None) -> dict[str, Any]:
    """The schema of ``version`` in a CRD of ``SCHEMAS`` (the one of ``kind`` where the file holds several),
    strict, with the object metadata the API server checks."""
    # libyaml's loader where PyYAML has it: InferenceService's CRD is 2 MB, which the pure-Python one
    # takes seconds over.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (SCHEMAS / file_name).open() as stream:
        crds = [crd for crd in yaml.load_all(stream, Loader=loader) if crd]
    [crd] = [crd for crd in crds if kind is None or crd["spec"]["names"]["kind"] == kind]
    kind = crd["spec"]["names"]["kind"]
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = _strict(served["schema"]["openAPIV3Schema"])
    schema["properties"].update(
        apiVersion={"const": f"{crd['spec']['group']}/{version}"}, kind={"const": kind}, metadata=METADATA
    )
    schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
    return schema


def _list_map_keys(
    validator: jsonschema.protocols.Validator, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """A list the API server treats as a map: no two items with the same keys (two rule groups of one name)."""
    if not validator.is_type(instance, "array"):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        key = tuple(item.get(name) for name in keys)
        if key in seen:
            yield jsonschema.ValidationError(f"two items with {dict(zip(keys, key, strict=True))}")
        seen.add(key)


VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-map-keys": _list_map_keys}
)

# (apiVersion, kind) → the vendored file holding its CRD. Read when a document of the kind is first
# validated, not at import: the tests that meet no such document do not pay for a 2 MB schema.
VENDORED: dict[tuple[str, str], str] = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("flagger.app/v1beta1", "Canary"): "flagger.app_crds.yaml",
    ("flagger.app/v1beta1", "MetricTemplate"): "flagger.app_crds.yaml",
}


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    """The schema documents of ``kind`` are checked against, or None for a kind that is not a known CRD's."""
    if (api_version, kind) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        return SERVICE_MONITOR
    file_name = VENDORED.get((api_version, kind))
    if file_name is None:
        return None
    return vendored(file_name, api_version.rsplit("/", 1)[1], kind)

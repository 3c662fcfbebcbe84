"""prometheus-adapter's configuration as deploy/prometheus-adapter/values.yaml makes its Helm chart write it,
the schemas it is checked against, and its query templates filled in as the adapter fills them.

The adapter reads its config.yaml with ``yaml.UnmarshalStrict`` into ``MetricsDiscoveryConfig``
(kubernetes-sigs/prometheus-adapter v0.12.0, ``pkg/config/config.go``): an unknown field stops it at
start, so ``CONFIG`` refuses one too, and gives each field the type of the Go struct's. ``VALUES``
describes the keys of the chart's values.yaml (prometheus-community/helm-charts,
``charts/prometheus-adapter``) that ours sets; the chart writes config.yaml from ``rules`` (its
``templates/configmap.yaml``): with ``default: false``, the ``custom`` rules alone.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY

VALUES_FILE = DEPLOY / "prometheus-adapter" / "values.yaml"

_STRING = {"type": "string"}
_REGEX_FILTER = {
    "type": "object",
    "properties": {"is": _STRING, "isNot": _STRING},
    "additionalProperties": False,
    "maxProperties": 1,  # "Only one field may be set at a time."
}
_RESOURCE_MAPPING = {
    "type": "object",
    "properties": {
        "template": _STRING,
        "overrides": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["resource"],
                "properties": {"group": _STRING, "resource": _STRING},
                "additionalProperties": False,
            },
        },
        "namespaced": {"type": "boolean"},
    },
    "additionalProperties": False,
}
_DISCOVERY_RULE = {
    "type": "object",
    # Not required by the Go struct, but a rule without them finds no series or answers no query.
    "required": ["seriesQuery", "resources", "metricsQuery"],
    "properties": {
        "seriesQuery": _STRING,
        "seriesFilters": {"type": "array", "items": _REGEX_FILTER},
        "resources": _RESOURCE_MAPPING,
        "name": {
            "type": "object",
            "properties": {"matches": _STRING, "as": _STRING},
            "additionalProperties": False,
        },
        "metricsQuery": _STRING,
    },
    "additionalProperties": False,
}
_RESOURCE_RULE = {
    "type": "object",
    "properties": {
        "containerQuery": _STRING,
        "nodeQuery": _STRING,
        "resources": _RESOURCE_MAPPING,
        "containerLabel": _STRING,
    },
    "additionalProperties": False,
}
CONFIG: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rules": {"type": "array", "items": _DISCOVERY_RULE},
        "resourceRules": {
            "type": "object",
            "properties": {"cpu": _RESOURCE_RULE, "memory": _RESOURCE_RULE, "window": _STRING},
            "additionalProperties": False,
        },
        "externalRules": {"type": "array", "items": _DISCOVERY_RULE},
    },
    "additionalProperties": False,
}
VALUES: dict[str, Any] = {
    "type": "object",
    "required": ["prometheus", "rules"],
    "properties": {
        "prometheus": {
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^https?://"},
                "port": {"type": "integer"},
                "path": _STRING,
            },
            "additionalProperties": False,
        },
        "rules": {
            "type": "object",
            "required": ["default", "custom"],
            "properties": {"default": {"type": "boolean"}, "custom": {"type": "array"}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

_FIELD = re.compile(r"<<\s*\.(\w+)\s*>>")


def values() -> dict[str, Any]:
    """deploy/prometheus-adapter/values.yaml, parsed afresh for each test."""
    return dict(yaml.safe_load(VALUES_FILE.read_text()))


def config() -> dict[str, Any]:
    """The config.yaml the chart writes from the values: our rules, and the chart's defaults if enabled."""
    chart_rules = values()["rules"]
    assert chart_rules["default"] is False, "the chart's default rules would publish our series a second time"
    return {"rules": chart_rules["custom"]}


def rules() -> list[dict[str, Any]]:
    """The discovery rules the adapter runs."""
    return list(config()["rules"])


def series_name(rule: dict[str, Any]) -> str:
    """The metric name a rule's seriesQuery selects (``name{matchers}``)."""
    match = re.fullmatch(r"([a-zA-Z_:][\w:]*)\{.*\}", rule["seriesQuery"])
    assert match, f"seriesQuery {rule['seriesQuery']!r} does not select one metric by name"
    return match[1]


def fill(template: str, fields: dict[str, str]) -> str:
    """A metricsQuery as the adapter sends it: each ``<<.Field>>`` replaced; a field without a value fails,
    as Go's template does."""

    def value(match: re.Match[str]) -> str:
        assert match[1] in fields, f"no value for <<.{match[1]}>> in {template!r}"
        return fields[match[1]]

    filled = _FIELD.sub(value, template)
    assert "<<" not in filled, f"a template action left in {filled!r}"
    assert ">>" not in filled, f"a template action left in {filled!r}"
    return filled

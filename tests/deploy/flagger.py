"""The Flagger rollout of deploy/flagger: its Canary, and the queries of its gate as Flagger sends them.

Flagger renders a MetricTemplate's query with Go's text/template, its fields as functions
(``{{ namespace }}``, ``{{ target }}``, ``{{ interval }}``...) and ``missingkey=error``
(fluxcd/flagger v1.44.0, ``pkg/metrics/observers/render.go``, ``MetricTemplateModel``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.deploy.manifests import Document, one, render_path

DIRECTORY = "deploy/flagger"
_ACTION = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Check:
    """One metric of the canary's analysis: its name, range and the query its template renders to."""

    name: str
    threshold: dict[str, float]
    query: str


def rendered() -> list[Document]:
    """What `kubectl kustomize deploy/flagger/` produces."""
    return render_path(DIRECTORY)


def fill(template: str, fields: dict[str, str]) -> str:
    """A template as Flagger renders it; an action it does not know fails, as ``missingkey=error`` does."""

    def value(match: re.Match[str]) -> str:
        assert match[1] in fields, f"no value for {{{{ {match[1]} }}}} in {template!r}"
        return fields[match[1]]

    filled = _ACTION.sub(value, template)
    assert "{{" not in filled, f"a template action left in {filled!r}"
    assert "}}" not in filled, f"a template action left in {filled!r}"
    return filled


def checks(docs: list[Document], **fields: str) -> list[Check]:
    """The canary's metrics, each with its template's query filled in for the canary (``fields`` replace
    the values Flagger would give, to aim a query at other series)."""
    canary = one(docs, "Canary")
    templates = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "MetricTemplate"}
    found = []
    for metric in canary["spec"]["analysis"]["metrics"]:
        template: dict[str, Any] = templates[metric["templateRef"]["name"]]
        model = {
            "name": canary["metadata"]["name"],
            "namespace": canary["metadata"]["namespace"],
            "target": canary["spec"]["targetRef"]["name"],
            "interval": metric["interval"],
            **fields,
        }
        found.append(Check(metric["name"], metric["thresholdRange"], fill(template["spec"]["query"], model)))
    return found

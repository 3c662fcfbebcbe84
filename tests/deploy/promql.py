"""The PromQL of the alert rules and of the Grafana dashboard, read from the files that deploy them, so
that the tests check what operators run rather than a copy of it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, ROOT

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "modelserve.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
METRICS_DOC = ROOT / "docs" / "METRICS.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Series that other exporters (kube-state-metrics, Kubecost, cAdvisor, DCGM) or Prometheus itself provide.
EXTERNAL = re.compile(r"^(kube_|kubecost_|container_|DCGM_|haproxy_)|^(up|ALERTS)$")
_KEYWORDS = {"and", "or", "unless", "bool"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Query:
    """One expression, where it comes from (to name it when it fails), and its legend's template."""

    where: str
    expr: str
    legend: str = ""


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's provisioning reads it, parsed afresh for each test."""
    return dict(json.loads(DASHBOARD.read_text()))


def panels() -> list[dict[str, Any]]:
    """Every panel that draws something, including those inside collapsed rows."""
    found = []
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def variables() -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


def model_variable_query() -> str:
    """The query of the `model` variable: Grafana stores it as a string or, since 10, in an object."""
    query = variables()["model"]["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def dashboard_queries() -> list[Query]:
    """Every panel target and every Prometheus annotation of the dashboard."""
    queries = [
        Query(f"panel {panel['title']!r} {target['refId']}", target["expr"], target.get("legendFormat", ""))
        for panel in panels()
        for target in panel["targets"]
    ]
    for annotation in dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            queries.append(Query(f"annotation {annotation['name']!r}", annotation["expr"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of every group, as Prometheus loads them."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_queries() -> list[Query]:
    """The expression of every alert rule."""
    return [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def concrete(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's variables ($x, ${x}, ${x:format}, [[x]]) replaced by ``values``.

    A variable without a value fails, so that a new one cannot reach Prometheus unreplaced.
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"no value for Grafana variable ${name} in {expr!r}"
        return values[name]

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: what is left once strings, matchers, ranges, label lists,
    offsets, functions and operators are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    names = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {name for name in names if name not in _KEYWORDS}


def documented_metrics() -> set[str]:
    """The metric names of docs/METRICS.md's tables."""
    return set(re.findall(r"^\| `([a-z_:]+)` \|", METRICS_DOC.read_text(), re.M))


def is_documented(name: str, documented: set[str]) -> bool:
    """Whether ``name`` is a documented metric, or one of a documented histogram's series."""
    return name in documented or re.sub(r"_(bucket|sum|count)$", "", name) in documented


def top_level_operands(expr: str, operator: str) -> list[str]:
    """``expr`` split at each ``operator`` that stands outside brackets and strings."""
    parts, depth, start, quoted = [], 0, 0, False
    for index, char in enumerate(expr):
        if char == '"' and (index == 0 or expr[index - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and expr.startswith(operator, index):
            parts.append(expr[start:index].strip())
            start = index + len(operator)
    parts.append(expr[start:].strip())
    return parts

"""The alert rules pass promtool's checks and unit tests, each is complete and links to the runbook, and the
PrometheusRule of the Kubernetes manifests carries exactly them."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from tests.deploy.manifests import one, render
from tests.deploy.tools import DEPLOY, ROOT, tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
UNIT_TESTS = RULES.parent / "alerts.test.yml"
WRAP = RULES.parent / "prometheusrule.sh"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml"


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=RULES.parent, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    output = _run(tool("promtool"), "check", "rules", RULES.name)

    assert f"SUCCESS: {len(_alerts())} rules found" in output


def test_promtool_unit_tests_pass() -> None:
    output = _run(tool("promtool"), "test", "rules", UNIT_TESTS.name)

    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent() -> None:
    """A silent case must feed one of the alert's own metrics: an alert is trivially silent without data."""
    firing: set[str] = set()
    silent: set[str] = set()
    expressions = {rule["alert"]: rule["expr"] for rule in _alerts()}
    for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        metrics = {series["series"].split("{", 1)[0].strip() for series in group.get("input_series", [])}
        for case in group.get("alert_rule_test", []):
            name = case["alertname"]
            assert name in expressions, f"{UNIT_TESTS.name} tests {name}, which {RULES.name} does not define"
            if case.get("exp_alerts"):
                firing.add(name)
            elif any(re.search(rf"\b{re.escape(metric)}\b", expressions[name]) for metric in metrics):
                silent.add(name)

    assert sorted(expressions.keys() - firing) == [], "alerts without a case where they fire"
    assert sorted(expressions.keys() - silent) == [], "alerts never kept silent on their own metrics"


def test_every_alert_has_a_duration_severity_text_and_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", runbook, re.M)
    }
    for rule in _alerts():
        name = rule["alert"]
        assert "for" in rule, name
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert annotations["summary"], name
        assert annotations["description"], name
        url = annotations["runbook_url"]
        assert url.startswith("docs/RUNBOOK.md#"), name
        assert url.split("#", 1)[1] in anchors, f"{name}: no section '{url}' in docs/RUNBOOK.md"


def test_the_prometheus_rule_carries_exactly_the_groups_of_the_rules_file() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for name in ("base", "prod"):
        rule = one(render(name), "PrometheusRule")
        assert rule["spec"] == {"groups": groups}, f"{PROMETHEUS_RULE.name} differs from {RULES.name}: run {WRAP.name}"
    assert {r["alert"] for g in groups for r in g["rules"]} >= {"HighLatency", "InferenceLatencyHigh", "GPUMemoryHigh"}


def test_the_prometheus_rule_file_is_what_the_script_writes_from_the_rules() -> None:
    result = subprocess.run(["sh", str(WRAP)], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMETHEUS_RULE.read_text(), (
        f"regenerate it: sh deploy/prometheus/{WRAP.name} > deploy/kubernetes/base/{PROMETHEUS_RULE.name}"
    )

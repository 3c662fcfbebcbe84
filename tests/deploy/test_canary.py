"""The Flagger rollout (deploy/flagger): it matches Flagger's CRD schemas, refers to objects the prod
overlay creates, leaves Flagger the Service it writes and protects the pods that serve, scrapes the
canary, and gates each step on modelserve's metrics of the canary's pods alone, with the thresholds of
the alerts; promtool evaluates the gate's queries."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy import flagger, promql, promtool
from tests.deploy.manifests import Document, container, one, render, validate
from tests.deploy.tools import ROOT

CANARY_POD = "model-serving-7d9f8b6c5d-x2x7q"
PRIMARY_POD = "model-serving-primary-5f6d7c8b9a-q8w4r"
MODEL = 'model="mlp",protocol="http"'


def _alert(name: str) -> dict[str, Any]:
    [rule] = [rule for rule in promql.alert_rules() if rule["alert"] == name]
    return rule


def _threshold(name: str) -> float:
    """The figure an alert's expression compares with, at its end (``... > 0.01``)."""
    return float(re.findall(r">\s*([\d.]+)\s*$", _alert(name)["expr"].strip())[0])


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return bool(selector)


def test_every_document_matches_its_schema_in_the_model_serving_namespace() -> None:
    docs = flagger.rendered()
    assert {"Canary", "MetricTemplate"} <= {doc["kind"] for doc in docs}
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "model-serving", doc["kind"]


def test_validation_refuses_misspelt_fields() -> None:
    docs = flagger.rendered()
    canary = copy.deepcopy(one(docs, "Canary"))
    canary["spec"]["analysis"]["metrics"][0]["thresholdRang"] = canary["spec"]["analysis"]["metrics"][0].pop(
        "thresholdRange"
    )
    with pytest.raises(jsonschema.ValidationError, match="thresholdRang"):
        validate(canary)
    template = copy.deepcopy(next(doc for doc in docs if doc["kind"] == "MetricTemplate"))
    template["spec"]["provider"]["type"] = "prometheus-operator"
    with pytest.raises(jsonschema.ValidationError):
        validate(template)


def test_the_canary_refers_to_the_objects_of_the_prod_overlay() -> None:
    docs = flagger.rendered()
    spec = one(docs, "Canary")["spec"]
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    for reference in (spec["targetRef"], spec["autoscalerRef"], spec["ingressRef"]):
        assert (reference["kind"], reference["name"]) in names, reference
    target = spec["targetRef"]["name"]
    # Flagger's convention: the Deployment selects its pods by app=<its name>, which it rewrites to
    # app=<name>-primary in the copy it serves from.
    assert one(docs, "Deployment")["spec"]["selector"] == {"matchLabels": {"app": target}}
    scaler = one(docs, "HorizontalPodAutoscaler")
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}
    templates = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "MetricTemplate"}
    assert {metric["templateRef"]["name"] for metric in spec["analysis"]["metrics"]} == templates
    assert ("Ingress", spec["ingressRef"]["name"]) in {(doc["kind"], doc["metadata"]["name"]) for doc in render("prod")}


def test_the_service_flagger_writes_is_the_one_of_the_base() -> None:
    """Flagger's Service model-serving: the canary's port, then each other container port (portDiscovery)."""
    docs = flagger.rendered()
    assert "Service" not in {doc["kind"] for doc in docs}, "Flagger writes it; one here would fight it"
    service = one(docs, "Canary")["spec"]["service"]
    assert service["portDiscovery"] is True
    ports = {port["name"]: port["containerPort"] for port in container(docs)["ports"]}
    written = {(service["portName"], service["port"], ports[service["targetPort"]])}
    written |= {(name, number, number) for name, number in ports.items() if name != service["targetPort"]}
    base = one(render("prod"), "Service")
    assert base["metadata"]["name"] == one(docs, "Canary")["metadata"]["name"]
    assert {(p["name"], p["port"], ports[p["targetPort"]]) for p in base["spec"]["ports"]} == written
    backends = [
        p["backend"]["service"] for rule in one(docs, "Ingress")["spec"]["rules"] for p in rule["http"]["paths"]
    ]
    assert backends == [{"name": base["metadata"]["name"], "port": {"name": service["portName"]}}]


def test_the_budget_protects_the_serving_pods_and_the_policy_covers_both() -> None:
    docs = flagger.rendered()
    target = one(docs, "Canary")["spec"]["targetRef"]["name"]
    primary, canary = {"app": f"{target}-primary"}, {"app": target}
    budget = one(docs, "PodDisruptionBudget")["spec"]["selector"]
    assert _selects(budget, primary)
    assert not _selects(budget, canary), "the canary is scaled to zero between rollouts"
    policy = one(docs, "NetworkPolicy")["spec"]["podSelector"]
    assert _selects(policy, primary)
    assert _selects(policy, canary)


def test_the_canary_pods_and_the_serving_pods_are_scraped() -> None:
    """Flagger labels its Services app=<name> (model-serving, its pods the primary's) and app=<name>-canary."""
    docs = flagger.rendered()
    canary = one(docs, "Canary")
    target, port = canary["spec"]["targetRef"]["name"], canary["spec"]["service"]["portName"]
    monitors = {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "ServiceMonitor"}
    for labels in ({"app": target}, {"app": f"{target}-canary"}):
        [monitor] = [spec for spec in monitors.values() if _selects(spec["selector"], labels)]
        assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [(port, "/metrics")]


def test_the_progress_deadline_outlasts_a_model_load() -> None:
    docs = flagger.rendered()
    startup = container(docs)["startupProbe"]
    assert (
        one(docs, "Canary")["spec"]["progressDeadlineSeconds"] > startup["periodSeconds"] * startup["failureThreshold"]
    )


def test_the_gate_holds_the_canary_to_the_alerts() -> None:
    """A step fails where the alerts would page: the error rate of InferenceErrorRateHigh, counting the
    same codes, and the p99 latency of HighLatency."""
    checks = {check.name: check for check in flagger.checks(flagger.rendered())}
    assert checks["success-rate"].threshold == {"min": pytest.approx(100 * (1 - _threshold("InferenceErrorRateHigh")))}
    assert checks["latency-p99"].threshold == {"max": _threshold("HighLatency")}
    [codes] = set(re.findall(r'code=~"([^"]+)"', _alert("InferenceErrorRateHigh")["expr"]))
    assert re.findall(r'code=~"([^"]+)"', checks["success-rate"].query) == [codes]


def test_the_guide_states_the_steps_and_the_gate_the_canary_holds() -> None:
    text = " ".join((ROOT / "docs" / "DEPLOYMENT.md").read_text().split())
    spec = one(flagger.rendered(), "Canary")["spec"]
    analysis = spec["analysis"]
    assert analysis["interval"] == "1m"
    assert f"gets {analysis['stepWeight']} % more of the Ingress's traffic, up to {analysis['maxWeight']} %" in text
    assert f"fails {analysis['threshold']} checks is rolled back" in text
    assert f"waits up to {spec['progressDeadlineSeconds'] // 60} minutes" in text
    checks = {check.name: check.threshold for check in flagger.checks(flagger.rendered())}
    assert f"`success-rate`: at least {checks['success-rate']['min']:g} % of its requests" in text
    assert f"`latency-p99`: its p99 request duration at most {checks['latency-p99']['max'] * 1000:g} ms" in text


def test_every_metric_the_gate_reads_is_documented() -> None:
    documented = promql.documented_metrics()
    for check in flagger.checks(flagger.rendered()):
        names = promql.metric_names(check.query)
        assert names, check.name
        for name in names:
            assert promql.is_documented(name, documented), f"{check.name}: {name} is not in docs/METRICS.md"


def _requests(namespace: str, pod: str, code: str) -> str:
    return f'model_serving_requests_total{{namespace="{namespace}",pod="{pod}",{MODEL},code="{code}"}}'


def _bucket(namespace: str, pod: str, le: str) -> str:
    return f'model_serving_request_duration_seconds_bucket{{namespace="{namespace}",pod="{pod}",{MODEL},le="{le}"}}'


# Per 15 s, in model-serving: the canary answers 100 requests, 2 of them a client's error (400) and one a
# server error (500), half within 25 ms and all within 50 ms; the primary fails and is slow, which must not
# count. In the namespace quiet, a canary with no server error at all; in idle, one with no traffic.
SERIES = {
    _requests("model-serving", CANARY_POD, "200"): "0+97x8",
    _requests("model-serving", CANARY_POD, "400"): "0+2x8",
    _requests("model-serving", CANARY_POD, "500"): "0+1x8",
    _requests("model-serving", PRIMARY_POD, "200"): "0+50x8",
    _requests("model-serving", PRIMARY_POD, "503"): "0+50x8",
    _requests("quiet", CANARY_POD, "200"): "0+10x8",
    _requests("idle", CANARY_POD, "200"): "10x8",
    _bucket("model-serving", CANARY_POD, "0.025"): "0+50x8",
    _bucket("model-serving", CANARY_POD, "0.05"): "0+100x8",
    _bucket("model-serving", CANARY_POD, "+Inf"): "0+100x8",
    _bucket("model-serving", PRIMARY_POD, "0.025"): "0+0x8",
    _bucket("model-serving", PRIMARY_POD, "0.05"): "0+0x8",
    _bucket("model-serving", PRIMARY_POD, "+Inf"): "0+100x8",
    _bucket("idle", CANARY_POD, "0.025"): "10x8",
    _bucket("idle", CANARY_POD, "+Inf"): "10x8",
}


def test_the_gate_judges_the_canary_pods_alone(tmp_path: Path) -> None:
    docs: list[Document] = flagger.rendered()
    judged = {check.name: check.query for check in flagger.checks(docs)}
    quiet = {check.name: check.query for check in flagger.checks(docs, namespace="quiet")}
    idle = {check.name: check.query for check in flagger.checks(docs, namespace="idle")}
    cases = [
        promtool.case(judged["success-rate"], "2m", [promtool.sample("{}", 99)]),
        promtool.case(quiet["success-rate"], "2m", [promtool.sample("{}", 100)]),
        # rank 99 of 100, in the bucket from 25 ms (50 requests) to 50 ms (50 more): 25 + 25 * 49/50 ms.
        promtool.case(judged["latency-p99"], "2m", [promtool.sample("{}", 0.0495)]),
        # No traffic: no value (the success rate's 0/0 is NaN, which Flagger reads as none), a failed check.
        promtool.case(f"({idle['success-rate']}) == ({idle['success-rate']})", "2m", []),
        promtool.case(f"({idle['latency-p99']}) == ({idle['latency-p99']})", "2m", []),
    ]

    promtool.evaluate(tmp_path, SERIES, cases)

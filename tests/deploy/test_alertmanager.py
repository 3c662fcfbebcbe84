"""Alertmanager's configuration is valid, sends each severity where the on-call team expects it, and
inhibits only what its causes explain."""

from __future__ import annotations

import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.promql import alert_rules
from tests.deploy.tools import DEPLOY, tool

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
RECEIVER_OF = {"critical": "pager", "warning": "chat", "info": "low-priority"}
MATCHER = re.compile(r'^(\w+)(=~|=)"(.*)"$')


def _amtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), *arguments], capture_output=True, text=True, timeout=60, cwd=CONFIG.parent, check=False
    )


def _routes_test(labels: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    pairs = [f"{name}={value}" for name, value in labels.items()]
    return _amtool("config", "routes", "test", f"--config.file={CONFIG.name}", *flags, *pairs)


def _receiver_of(labels: dict[str, str]) -> str:
    """The receivers amtool resolves ``labels`` to, from the file rather than a running Alertmanager."""
    result = _routes_test(labels)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _config() -> dict[str, Any]:
    return dict(yaml.safe_load(CONFIG.read_text()))


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    """Alertmanager's matching for the two forms the file uses; any other form fails the test."""
    for matcher in matchers:
        parsed = MATCHER.match(matcher)
        assert parsed is not None, f'matcher {matcher!r}: only name="v" and name=~"re" are checked here'
        name, operator, value = parsed.groups()
        actual = labels.get(name, "")
        if not (re.fullmatch(value, actual) if operator == "=~" else actual == value):
            return False
    return True


def _inhibited(target: dict[str, str], firing: list[dict[str, str]]) -> bool:
    """Whether an inhibit rule of the file mutes ``target`` while ``firing`` fire.

    As Alertmanager documents it: a missing label equals the empty string, and an alert that matches
    both sides of a rule is not muted by alerts that also do (itself included). A real Alertmanager
    cannot check this here: Debian's build, unpacked into .tools, reads its default template from
    /usr/share, which only installing the package as root creates.
    """
    for rule in _config()["inhibit_rules"]:
        sources, targets = rule["source_matchers"], rule["target_matchers"]
        if not _matches(targets, target):
            continue
        for source in firing:
            same = all(source.get(name, "") == target.get(name, "") for name in rule.get("equal", []))
            both_sides = _matches(sources, target) and _matches(targets, source)
            if same and _matches(sources, source) and not both_sides:
                return True
    return False


def test_amtool_accepts_the_configuration() -> None:
    result = _amtool("check-config", CONFIG.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "3 receivers" in result.stdout


@pytest.mark.parametrize("severity", sorted(RECEIVER_OF))
def test_each_severity_reaches_its_receiver(severity: str) -> None:
    labels = {"alertname": "Example", "severity": severity, "model": "mlp"}
    verified = _routes_test(labels, f"--verify.receivers={RECEIVER_OF[severity]}")

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip() == RECEIVER_OF[severity]


def test_amtool_verification_fails_on_a_wrong_receiver() -> None:
    wrong = _routes_test({"alertname": "Example", "severity": "critical"}, "--verify.receivers=chat")

    assert wrong.returncode != 0, "the routing checks above would prove nothing"


def test_an_alert_without_a_known_severity_still_reaches_chat() -> None:
    assert _receiver_of({"alertname": "Example"}) == "chat"
    assert _receiver_of({"alertname": "Example", "severity": "page"}) == "chat"


def test_every_alert_rule_reaches_the_receiver_of_its_severity() -> None:
    for rule in alert_rules():
        labels = {"alertname": rule["alert"], "model": "mlp", **rule["labels"]}
        assert _receiver_of(labels) == RECEIVER_OF[rule["labels"]["severity"]], rule["alert"]


def test_alerts_are_grouped_per_alert_and_model() -> None:
    assert _config()["route"]["group_by"] == ["alertname", "model"]


def test_every_receiver_is_a_placeholder_that_holds_no_secret() -> None:
    receivers = _config()["receivers"]

    assert {receiver["name"] for receiver in receivers} == set(RECEIVER_OF.values())
    for receiver in receivers:
        assert set(receiver) == {"name", "webhook_configs"}, receiver["name"]
        for webhook in receiver["webhook_configs"]:
            url = urlsplit(webhook["url"])
            assert url.hostname is not None, receiver["name"]
            assert url.hostname.endswith(".invalid"), f"{receiver['name']}: {webhook['url']} is not a placeholder"
            assert url.username is None, receiver["name"]
            assert url.password is None, receiver["name"]
            assert not url.query, receiver["name"]


def test_a_critical_alert_mutes_the_warnings_and_infos_of_its_own_model_only() -> None:
    errors = {"alertname": "InferenceErrorRateHigh", "severity": "critical", "model": "mlp"}
    latency_mlp = {"alertname": "InferenceLatencyHigh", "severity": "warning", "model": "mlp"}
    latency_iris = {"alertname": "InferenceLatencyHigh", "severity": "warning", "model": "iris"}
    gpu = {"alertname": "GPUMemoryHigh", "severity": "warning", "gpu": "0"}
    critical_elsewhere = {"alertname": "InferenceErrorRateHigh", "severity": "critical", "model": "iris"}
    firing = [errors, latency_mlp, latency_iris, gpu, critical_elsewhere]

    assert _inhibited(latency_mlp, firing)
    assert not _inhibited(latency_iris, [errors, latency_iris])
    assert not _inhibited(gpu, firing), "a model's failure says nothing about a GPU"
    assert not _inhibited(errors, firing), "a page is never muted by another page"


def test_a_critical_alert_without_a_model_mutes_nothing() -> None:
    unscoped = {"alertname": "SomethingCritical", "severity": "critical"}
    gpu = {"alertname": "GPUMemoryHigh", "severity": "warning", "gpu": "0"}

    assert not _inhibited(gpu, [unscoped, gpu])


def test_a_full_queue_mutes_the_latency_alert_of_the_same_model() -> None:
    saturated = {"alertname": "ModelServingQueueSaturated", "severity": "warning", "model": "mlp"}
    latency_mlp = {"alertname": "InferenceLatencyHigh", "severity": "warning", "model": "mlp"}
    latency_iris = {"alertname": "InferenceLatencyHigh", "severity": "warning", "model": "iris"}

    assert _inhibited(latency_mlp, [saturated, latency_mlp])
    assert not _inhibited(latency_iris, [saturated, latency_iris])
    assert not _inhibited(saturated, [saturated, latency_mlp])


def test_inhibition_names_only_alerts_that_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    for rule in _config()["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            if matcher.startswith("alertname="):
                assert matcher.split("=", 1)[1].strip('"') in names, matcher

"""docs/DEPLOYMENT.md: its checked commands run, and what it names exists and agrees with the manifests.

A block preceded by ``<!-- checked -->`` is run one command at a time. There is no cluster here, so
``kubectl apply -k DIR`` becomes ``kubectl kustomize DIR``, ``kubectl apply -f FILE`` reads FILE, and a
trailing ``| kubectl apply -f -`` is dropped: what apply would send is rendered, and every document of it
must match its schema.
"""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy import adapter
from tests.deploy.manifests import documents, kubectl, one, render, validate
from tests.deploy.tools import ROOT

DOC = ROOT / "docs" / "DEPLOYMENT.md"
FENCE = re.compile(r"(<!-- checked -->\n)?^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(language: str, *, checked: bool | None = None) -> list[str]:
    return [
        m[3] for m in FENCE.finditer(DOC.read_text()) if m[2] == language and (checked is None or bool(m[1]) == checked)
    ]


def _commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _offline(command: str) -> str:
    """The command with its cluster-side step replaced by rendering what it would send."""
    command = re.sub(r"\|\s*kubectl apply -f -\s*$", "", command)
    command = re.sub(r"^kubectl apply (?:-n \S+ )?-f ([^\s-]\S*)$", r"cat \1", command)
    return re.sub(r"^kubectl apply -k ", "kubectl kustomize ", command)


def _run(command: str) -> str:
    kubectl()  # fails saying how to get it, rather than as "command not found" from bash
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert result.returncode == 0, f"docs/DEPLOYMENT.md: {command}\n{result.stderr}"
    return result.stdout


def test_checked_commands_produce_valid_kubernetes_documents() -> None:
    commands = [command for block in _blocks("bash", checked=True) for command in _commands(block)]
    assert len(commands) >= 4
    for command in commands:
        rendered = documents(_run(_offline(command)))
        assert rendered, f"{command} produced nothing"
        for document in rendered:
            validate(document)


def test_every_kustomization_and_deploy_file_the_guide_names_exists() -> None:
    text = DOC.read_text()
    for directory in re.findall(r"(?:apply -k|kubectl kustomize) ([^\s`]+)", text):
        assert (ROOT / directory / "kustomization.yaml").is_file(), directory
    named = set(re.findall(r"(?<![\w/])deploy/[\w./-]*\w", text))
    assert len(named) >= 10
    for path in named:
        assert (ROOT / path).exists(), f"docs/DEPLOYMENT.md names {path}, which does not exist"


def test_the_adapter_rules_the_guide_shows_are_the_ones_shipped() -> None:
    """The rules themselves are checked by tests/deploy/test_autoscaling.py."""
    shown = [rule for block in _blocks("yaml") for rule in (yaml.safe_load(block) or {}).get("rules", [])]
    assert shown, "the guide shows no adapter rule"
    for rule in shown:
        assert rule in adapter.rules(), f"the guide shows a rule that {adapter.VALUES_FILE.name} lacks: {rule}"
    assert str(adapter.VALUES_FILE.relative_to(ROOT)) in DOC.read_text()


def test_the_guide_states_the_numbers_the_manifests_hold() -> None:
    text = " ".join(DOC.read_text().split())
    base, prod = (one(render(name), "HorizontalPodAutoscaler")["spec"] for name in ("base", "prod"))
    assert f"({base['minReplicas']} to {base['maxReplicas']} pods in the base" in text
    assert f"{prod['minReplicas']} to {prod['maxReplicas']} in prod)" in text
    [cpu] = [m["resource"] for m in base["metrics"] if m["type"] == "Resource"]
    assert f"{cpu['target']['averageUtilization']} % of the pods' CPU request" in text
    for pods in (m["pods"] for m in base["metrics"] if m["type"] == "Pods"):
        target = pods["target"]["averageValue"]
        # "20m" of a metric in seconds is 20 ms.
        stated = f"{target[:-1]} ms" if target.endswith("m") else target
        _, found, after = text.partition(f"- `{pods['metric']['name']}`:")
        assert found, f"the guide has no item on {pods['metric']['name']}"
        assert f" {stated} per pod on average" in after.split(" - ", 1)[0], pods
    pod = one(render("base"), "Deployment")["spec"]["template"]["spec"]
    serving = pod["containers"][0]
    drain = next(item["value"] for item in serving["env"] if item["name"] == "SHUTDOWN_GRACE_SEC")
    assert f"`SHUTDOWN_GRACE_SEC` ({drain} s)" in text
    assert f"`preStop` hook waits {serving['lifecycle']['preStop']['exec']['command'][1]} s" in text
    assert f"`terminationGracePeriodSeconds` ({pod['terminationGracePeriodSeconds']} s)" in text

"""The runbooks' `kubectl` and `docker-compose` commands, pasted from the repository root, find in what we
deploy every object, namespace, label, container and port they name, and their patches apply.

The commands are in ``runbook_commands.txt``, verbatim. Those about the cluster itself (nodes, kube-system,
other tenants' namespaces) are not checked. What the others name and we lack is a finding; each finding
left is a deliberate exception below, with the reason, and an exception no command needs any more fails
too, so that the list stays the list of what still does not work as pasted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.deploy.manifests import render, render_path
from tests.deploy.runbook_checks import Deployed, findings, targets_ours
from tests.deploy.runbook_commands import Command, extract, load, parse
from tests.deploy.tools import DEPLOY, ROOT

COMMANDS = Path(__file__).parent / "runbook_commands.txt"
# What `kubectl apply -k` of these and `docker-compose -f` of this, from the repository root, create.
KUSTOMIZATIONS = ["kubernetes/overlays/prod/", "kubernetes/replication/"]
COMPOSE = "docker/docker-compose.yml"
OUR_DOCS = [ROOT / "docs" / "RUNBOOK.md", ROOT / "docs" / "DEPLOYMENT.md"]
# Our guide also applies the Flagger overlay over prod; its commands may name what that adds (the Canary).
FLAGGER = "deploy/flagger/"

EXCEPTIONS = {
    "namespace ml-platform": "the multi-region guide's namespace; the serving runbooks' is model-serving, "
    "which the servers and the replication service share (add -n model-serving instead)",
    "namespace inference": "the GPU operations guide's namespace; the serving runbooks' is model-serving",
    "namespace monitoring": "the PrometheusRule lives beside the ServiceMonitor and the servers, in "
    "model-serving (kubectl get prometheusrules -n model-serving)",
    "deployment/model-server": "the multi-region guide's name for the server; ours is deployment/model-serving",
    "service/model-server": "the multi-region guide's name for the Service; ours is service/model-serving",
    "label app=model-server": "the multi-region guide's label; ours is app=model-serving",
    "port 8080 of the pods": "the multi-region guide's port; the server listens on 8000 (HTTP) and 8001 (gRPC)",
    "deployment/api-gateway": "there is no API gateway: the server authenticates (API_KEYS, JWT_*) itself",
    "pod/postgres-0": "PostgreSQL is not deployed here; the traffic history's database is the one the "
    "modelserve-database Secret's URL names",
    "configmap/app-config": "the settings come from the generated modelserve-config ConfigMap "
    "(deploy/kubernetes/base/modelserve.env); no pod reads an app-config ConfigMap",
    "networkpolicy/model-serving admits no pod of namespace default": "the debug pod of `kubectl run` without "
    "-n runs in default, which the NetworkPolicy keeps out; add -n model-serving, or label the namespace "
    "modelserve-client=true",
}


@pytest.fixture(scope="module")
def deployed() -> Deployed:
    """What the runbooks' paths create."""
    return Deployed.from_paths(KUSTOMIZATIONS, COMPOSE)


@pytest.fixture(scope="module")
def guided(deployed: Deployed) -> Deployed:
    """What the runbooks' paths create, and the objects the Flagger overlay adds to them."""
    present = {(doc["kind"], doc["metadata"]["name"]) for doc in deployed.documents}
    added = [doc for doc in render_path(FLAGGER) if (doc["kind"], doc["metadata"]["name"]) not in present]
    assert {doc["kind"] for doc in added} >= {"Canary", "MetricTemplate"}
    return dataclasses.replace(deployed, documents=[*deployed.documents, *added])


def _findings(commands: list[Command], deployed: Deployed) -> list[tuple[Command, list[str]]]:
    return [(command, findings(command, deployed)) for command in commands if targets_ours(parse(command))]


def test_the_runbooks_paths_from_the_root_are_the_deploy_files() -> None:
    assert (ROOT / "kubernetes").resolve() == DEPLOY / "kubernetes"
    assert (ROOT / COMPOSE).resolve() == DEPLOY / "docker-compose.yml"
    assert render_path(KUSTOMIZATIONS[0]) == render("prod")


def test_every_runbook_command_finds_what_it_names_or_is_a_listed_exception(deployed: Deployed) -> None:
    commands = load(COMMANDS)
    found = _findings(commands, deployed)
    assert len(commands) >= 250
    assert len(found) >= 220, "the commands about our objects"
    unexplained = [(c.source, c.text, f) for c, missing in found for f in missing if f not in EXCEPTIONS]
    assert unexplained == []
    needed = {f for _, missing in found for f in missing}
    assert sorted(EXCEPTIONS.keys() - needed) == [], "exceptions that no command needs any more"
    working = [c for c, missing in found if not missing]
    assert len(working) >= 150
    assert any("kubectl apply -k kubernetes/overlays/prod/" in c.text for c in working)
    assert any(c.text.startswith("docker-compose -f docker/docker-compose.yml logs") for c in working)


@pytest.mark.parametrize("document", OUR_DOCS, ids=lambda path: path.name)
def test_our_docs_commands_find_everything_they_name(guided: Deployed, document: Path) -> None:
    found = _findings(extract(document.read_text(), document.name), guided)
    assert len(found) >= 10
    assert [(c.text, missing) for c, missing in found if missing] == []


WRONG = {
    "kubectl logs deploy/modelserve -n model-serving": "deployment/modelserve",
    "kubectl get pods -n inference": "namespace inference",
    "kubectl logs -n model-serving -l app=modelserve": "label app=modelserve",
    "kubectl logs -n model-serving <pod-name> -c modelserve": "container modelserve",
    "kubectl port-forward -n model-serving svc/model-serving 8000:8000": "port 8000 of service/model-serving",
    "kubectl exec -n model-serving <pod-name> -- curl localhost:8080/health": "port 8080 of the pods",
    "kubectl patch deployment model-serving -n model-serving --patch '\nspec:\n  template:\n    spec:\n"
    "      containers:\n      - name: modelserve\n        livenessProbe: null\n'": "container modelserve",
    'kubectl patch hpa model-serving-hpa -n model-serving -p \'{"spec": {"maxReplicas": "many"}}\'': (
        "patch of horizontalpodautoscaler/model-serving-hpa: "
    ),
    "kubectl create secret generic api-keys --from-literal=keys=abc -n model-serving": "key key1 of secret/api-keys",
    "kubectl cp model.onnx model-serving/<pod-name>:/opt/models/": "/opt/models/ on no volume",
    "kubectl run -it --rm debug --image=curlimages/curl --restart=Never -n model-serving -- "
    "curl http://model-serving.model-serving.svc.cluster.local:8000/health": "port 8000 of service/model-serving",
    "kubectl apply -k kubernetes/overlays/staging/": "kustomization kubernetes/overlays/staging/",
    "docker-compose -f docker/docker-compose.yml logs -f modelserve": "compose service modelserve",
    "docker-compose -f docker-compose.yml ps": "compose file docker-compose.yml",
}


@pytest.mark.parametrize(("text", "expected"), WRONG.items(), ids=list(WRONG.values()))
def test_a_command_that_names_one_thing_wrong_gets_that_finding(deployed: Deployed, text: str, expected: str) -> None:
    command = Command("a runbook", text)
    assert targets_ours(parse(command))
    [finding] = findings(command, deployed)
    assert finding.startswith(expected)

"""Rendering the kustomize overlays and validating Kubernetes documents, shared by the deploy tests.

Rendering is offline (`kubectl kustomize` needs no cluster). Built-in kinds are checked against the
OpenAPI schemas that kubernetes-validate bundles, in strict mode so that a misspelt field fails; the
custom kinds (the Prometheus Operator's, KServe's, Flagger's) against the structural schemas of
``crd_schemas``.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import latest_version

from modelserve.config import Settings
from tests.deploy.crd_schemas import VALIDATOR, crd_schema
from tests.deploy.tools import DEPLOY, ROOT

KUSTOMIZATIONS = {
    "base": DEPLOY / "kubernetes" / "base",
    "dev": DEPLOY / "kubernetes" / "overlays" / "dev",
    "prod": DEPLOY / "kubernetes" / "overlays" / "prod",
}
# The oldest Kubernetes the manifests support (docs/DEPLOYMENT.md says so), and the newest schema bundled.
KUBERNETES_VERSIONS = ("1.29", ".".join(latest_version().split(".")[:2]))

Document = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary; fails, saying how to get it, when it is missing."""
    found = shutil.which("kubectl")
    if found is None:
        raise AssertionError(
            "kubectl is missing: install it (https://kubernetes.io/docs/tasks/tools/); "
            "its built-in kustomize renders the overlays offline, no cluster needed"
        )
    return found


def documents(text: str) -> list[Document]:
    """The non-empty YAML documents of a stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def run_kubectl(*arguments: str) -> str:
    """kubectl's standard output; its error output in the failure when it exits non-zero."""
    result = subprocess.run([kubectl(), *arguments], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(arguments)} failed:\n{result.stderr}"
    return result.stdout


@functools.cache
def _rendered(directory: Path) -> str:
    return run_kubectl("kustomize", str(directory))


def render(name: str) -> list[Document]:
    """The documents `kubectl kustomize` produces for a kustomization of ``KUSTOMIZATIONS``."""
    return documents(_rendered(KUSTOMIZATIONS[name]))


def render_path(directory: str) -> list[Document]:
    """What `kubectl kustomize DIRECTORY` produces, run from the repository root as a command there names it."""
    return documents(_rendered(Path(directory)))


def one(docs: list[Document], kind: str) -> Document:
    """The single document of ``kind``."""
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: list[Document]) -> Document:
    """The serving container of the Deployment, named as the runbooks name it."""
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "model-serving")


def validate(document: Document) -> None:
    """Raise when ``document`` does not match its kind's schema at every supported Kubernetes version."""
    schema = crd_schema(str(document.get("apiVersion")), str(document.get("kind")))
    if schema is not None:
        VALIDATOR(schema).validate(document)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def documented_settings() -> set[str]:
    """Variables that are both settings the server reads and rows of docs/CONFIGURATION.md."""
    table = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", (ROOT / "docs" / "CONFIGURATION.md").read_text(), re.M))
    return table & {Settings.env_name(field) for field in Settings.model_fields}


def undocumented(names: list[str]) -> list[str]:
    """The names that are neither documented settings nor OpenTelemetry's own variables."""
    known = documented_settings()
    return [name for name in names if name not in known and not name.startswith("OTEL_")]

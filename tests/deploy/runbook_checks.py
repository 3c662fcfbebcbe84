"""What a runbook command names that our deployment lacks: checked without a cluster, on what applying the
manifests would create (objects, the pods of their templates, the Secrets and ConfigMaps they read) and
on the Compose file.

A finding is a short phrase naming what is missing (``namespace ml-platform``, ``deployment/model-server``,
``port 8080 of the pods``), so that one deliberate exception covers every command it breaks. Patches are
applied with ``kubectl patch --local`` to the rendered object and the result validated.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import Document, kubectl, render_path, validate
from tests.deploy.runbook_commands import Command, Invocation, is_placeholder, parse
from tests.deploy.tools import ROOT

# The namespaces the serving runbooks run their commands in; a command elsewhere (kube-system, a node)
# is about the cluster, not about our objects, unless it asks for a kind only we provide.
SERVING_NAMESPACES = {"model-serving", "inference", "ml-platform"}
OUR_KINDS = {"PrometheusRule", "ServiceMonitor"}
KINDS = {
    **dict.fromkeys(["deployment", "deployments", "deploy", "deployment.apps"], "Deployment"),
    **dict.fromkeys(["service", "services", "svc"], "Service"),
    **dict.fromkeys(["pod", "pods", "po"], "Pod"),
    **dict.fromkeys(["hpa", "horizontalpodautoscaler", "horizontalpodautoscalers"], "HorizontalPodAutoscaler"),
    **dict.fromkeys(["ingress", "ingresses", "ing"], "Ingress"),
    **dict.fromkeys(["networkpolicy", "networkpolicies", "netpol"], "NetworkPolicy"),
    **dict.fromkeys(["configmap", "configmaps", "cm"], "ConfigMap"),
    **dict.fromkeys(["secret", "secrets"], "Secret"),
    **dict.fromkeys(["pvc", "persistentvolumeclaim", "persistentvolumeclaims"], "PersistentVolumeClaim"),
    **dict.fromkeys(["endpoints", "ep"], "Endpoints"),
    **dict.fromkeys(["servicemonitor", "servicemonitors"], "ServiceMonitor"),
    **dict.fromkeys(["prometheusrule", "prometheusrules", "promrule"], "PrometheusRule"),
    **dict.fromkeys(["serviceaccount", "serviceaccounts", "sa"], "ServiceAccount"),
    **dict.fromkeys(["pdb", "poddisruptionbudget", "poddisruptionbudgets"], "PodDisruptionBudget"),
    **dict.fromkeys(["event", "events", "ev"], "Event"),
    **dict.fromkeys(["canary", "canaries", "canary.flagger.app"], "Canary"),
    **dict.fromkeys(["metrictemplate", "metrictemplates"], "MetricTemplate"),
    "all": "all",
}
NAMED_BY_VERB = {"get", "describe", "edit", "delete", "annotate", "label", "patch", "scale"}
ON_A_POD = {"logs", "exec", "port-forward", "debug", "attach"}
COPIED = re.compile(r"([\w-]+)/([^:/]+):(.*)")
SERVICE_ADDRESS = re.compile(r"(?:(https?)://)?([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local(?::(\d+))?")


@dataclass(frozen=True)
class Deployed:
    """What `kubectl apply -k` of our kustomizations and `docker-compose up` of our file would create."""

    documents: list[Document]
    compose_file: str
    compose: dict[str, Any]

    @classmethod
    def from_paths(cls, kustomizations: list[str], compose_file: str) -> Deployed:
        """Rendered from paths relative to the repository root, as the runbooks write them."""
        documents = [doc for path in kustomizations for doc in render_path(path)]
        return cls(documents, compose_file, yaml.safe_load((ROOT / compose_file).read_text()))

    def of(self, kind: str) -> list[Document]:
        """The documents of ``kind``."""
        return [doc for doc in self.documents if doc["kind"] == kind]

    def namespaces(self) -> set[str]:
        """The namespaces the manifests create."""
        return {doc["metadata"]["name"] for doc in self.of("Namespace")}

    def pods(self) -> list[Document]:
        """The pod templates of the workloads, with their workload's name and namespace."""
        return [
            {"workload": doc["metadata"]["name"], "namespace": doc["metadata"]["namespace"], **doc["spec"]["template"]}
            for doc in self.of("Deployment")
        ]

    def containers(self) -> list[Document]:
        """Every container of every pod template."""
        return [c for pod in self.pods() for c in pod["spec"]["containers"]]

    def secrets(self) -> dict[str, set[str]]:
        """The Secrets the objects read, each with the keys read from it (none: all of them, by envFrom)."""
        read: dict[str, set[str]] = {}
        for container in self.containers():
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    read.setdefault(source["secretRef"]["name"], set())
            for variable in container.get("env", []):
                if reference := variable.get("valueFrom", {}).get("secretKeyRef"):
                    read.setdefault(reference["name"], set()).add(reference["key"])
        for ingress in self.of("Ingress"):
            for tls in ingress["spec"].get("tls", []):
                read.setdefault(tls["secretName"], set()).update({"tls.crt", "tls.key"})
        return read

    def config_maps(self) -> set[str]:
        """The ConfigMaps the pods read."""
        names = {v["configMap"]["name"] for pod in self.pods() for v in pod["spec"]["volumes"] if "configMap" in v}
        names |= {
            s["configMapRef"]["name"] for c in self.containers() for s in c.get("envFrom", []) if "configMapRef" in s
        }
        return names

    def exists(self, kind: str, name: str | None) -> bool:
        """Whether an object of ``kind`` (named ``name``, or any when None or a placeholder) would exist."""
        anyone = name is None or is_placeholder(name)
        if kind in {"all", "Event"}:
            return True
        if kind == "Pod":
            return any(anyone or str(name).startswith(f"{pod['workload']}-") for pod in self.pods())
        if kind == "Endpoints":
            kind = "Service"
        if kind == "PersistentVolumeClaim":
            claims = [v["name"] for pod in self.pods() for v in pod["spec"]["volumes"] if "ephemeral" in v]
            return any(anyone or str(name).endswith(f"-{claim}") for claim in claims)
        if kind == "ServiceAccount":
            return anyone or name == "default" or any(d["metadata"]["name"] == name for d in self.of(kind))
        if kind == "Secret":
            return anyone or name in self.secrets()
        return any(anyone or doc["metadata"]["name"] == name for doc in self.of(kind))


def targets_ours(call: Invocation) -> bool:
    """Whether the command is about our objects rather than about the cluster or its other tenants."""
    if call.program == "docker-compose":
        return True
    words = " ".join(call.positional + call.inside)
    kinds = {KINDS.get(kind) for kind, _ in _targets(call)}
    applies = call.verb == ["apply"] and call.flag("-k", "--kustomize") is not None
    return _namespace(call) in SERVING_NAMESPACES or "svc.cluster.local" in words or bool(kinds & OUR_KINDS) or applies


def findings(command: Command, deployed: Deployed) -> list[str]:
    """What the command names that would not exist, as short phrases; none when it all would."""
    call = parse(command)
    if call.program == "docker-compose":
        return list(_compose(call, deployed))
    return sorted(set(_kubectl(call, deployed)))


def _namespace(call: Invocation) -> str | None:
    """The namespace the command names: with -n, in `kubectl cp`'s NAMESPACE/POD:PATH, or in a --raw path."""
    if namespace := call.flag("-n", "--namespace"):
        return namespace
    copied = [w.split("/", 1)[0] for w in call.positional if COPIED.fullmatch(w)]
    raw = re.search(r"/namespaces/([\w-]+)/", call.flag("--raw") or "")
    return copied[0] if copied else raw[1] if raw else None


def _targets(call: Invocation) -> list[tuple[str, str | None]]:
    """(resource type, name or None) of the objects the command acts on."""
    verb, words = call.verb, call.positional
    if verb[:1] == ["top"] and len(verb) == 2:
        return [(verb[1], words[0] if words else None)]
    if verb == ["auth", "can-i"]:
        return [(words[1], None)] if len(words) > 1 else []
    if verb[:1] == ["cp"]:
        return [("pod", match[2]) for w in words if (match := COPIED.fullmatch(w))]
    if not words or verb[:1] in (["create"], ["run"], ["apply"]) or call.flag("--raw"):
        return [("pod", None)] if verb[:1] == ["logs"] and call.flag("-l", "--selector") else []
    if "/" in words[0]:
        return [_split(w) for w in words if "/" in w and "=" not in w]
    if verb[0] in ON_A_POD:
        return [("pod", words[0])]
    if verb[0] in {"rollout", "set"}:
        return [(words[0], words[1] if len(words) > 1 else None)]
    if verb[0] in NAMED_BY_VERB:
        names = words[1:] if verb[0] in {"get", "describe", "delete"} else words[1:2]
        return [(words[0], name) for name in names] or [(words[0], None)]
    return []


def _split(word: str) -> tuple[str, str | None]:
    kind, _, name = word.partition("/")
    return kind, name


def _kubectl(call: Invocation, deployed: Deployed) -> Iterator[str]:
    namespace = _namespace(call)
    if namespace is not None and namespace not in deployed.namespaces():
        yield f"namespace {namespace}"
    targets = [(KINDS.get(kind.lower()), name) for kind, name in _targets(call)]
    for kind, name in targets:
        if kind is None:
            yield f"resource type of {call.positional}"
        elif not deployed.exists(kind, name):
            yield f"{kind.lower()}/{name}" if name else f"no {kind}"
    if selector := call.flag("-l", "--selector"):
        kind = next((kind for kind, _ in targets if kind), "Pod")
        labelled = deployed.pods() if kind == "Pod" else deployed.of(kind)
        pairs = dict(pair.split("=", 1) for pair in selector.split(","))
        if not any(pairs.items() <= item["metadata"].get("labels", {}).items() for item in labelled):
            yield f"label {selector}"
    yield from _containers(call, deployed)
    yield from _ports(call, targets, deployed)
    if call.verb == ["patch"] and targets and targets[0][1] and call.flag("-p", "--patch"):
        kind, name = targets[0]
        yield from _patch(call, [d for d in deployed.documents if (d["kind"], d["metadata"]["name"]) == (kind, name)])
    if call.verb[:1] == ["create"]:
        yield from _created(call, deployed)
    if call.verb == ["cp"]:
        yield from _copied(call, deployed)
    if call.verb == ["apply"] and (directory := call.flag("-k", "--kustomize")):
        try:
            render_path(directory)
        except AssertionError:
            yield f"kustomization {directory}"


def _containers(call: Invocation, deployed: Deployed) -> Iterator[str]:
    named = [call.flag("-c", "--container"), call.flag("--target")]
    if call.verb == ["set", "image"]:
        named += [w.split("=", 1)[0] for w in call.positional[1:] if "=" in w]
    present = {c["name"] for c in deployed.containers()}
    yield from (f"container {name}" for name in named if name and name not in present)


def _ports(call: Invocation, targets: list[tuple[str | None, str | None]], deployed: Deployed) -> Iterator[str]:
    """Ports forwarded to, or asked for on localhost inside a pod, must be the Service's or the pods'."""
    container_ports = {p["containerPort"] for c in deployed.containers() for p in c.get("ports", [])}
    if call.verb == ["port-forward"]:
        service = next((name for kind, name in targets if kind == "Service"), None)
        for spec in call.positional[1:]:
            port = int(spec.rsplit(":", 1)[-1])
            if service and deployed.exists("Service", service) and port not in _service_ports(deployed, service):
                yield f"port {port} of service/{service}"
            elif not service and port not in container_ports:
                yield f"port {port} of the pods"
    if call.verb == ["exec"]:
        for local in re.findall(r"localhost:(\d+)", " ".join(call.inside)):
            if int(local) not in container_ports:
                yield f"port {local} of the pods"
    yield from _addresses(call, deployed)


def _addresses(call: Invocation, deployed: Deployed) -> Iterator[str]:
    """A Service's cluster address must name one, on one of its ports, and its policy must let the caller in."""
    for scheme, name, namespace, written in SERVICE_ADDRESS.findall(" ".join(call.positional + call.inside)):
        address = (name, namespace)
        services = [d for d in deployed.of("Service") if (d["metadata"]["name"], d["metadata"]["namespace"]) == address]
        if not services:
            yield f"service {name}.{namespace}"
        elif scheme and int(written or {"http": 80, "https": 443}[scheme]) not in _service_ports(deployed, name):
            yield f"port {written or scheme} of service/{name}"
        elif scheme and call.verb == ["run"]:
            yield from _admitted(call.flag("-n", "--namespace") or "default", services[0], deployed)


def _service_ports(deployed: Deployed, name: str) -> set[int]:
    return {p["port"] for d in deployed.of("Service") if d["metadata"]["name"] == name for p in d["spec"]["ports"]}


def _admitted(client: str, service: Document, deployed: Deployed) -> Iterator[str]:
    """Whether the NetworkPolicies selecting the Service's pods admit a pod of namespace ``client``."""
    selected = service["spec"]["selector"].items()
    for policy in deployed.of("NetworkPolicy"):
        if not policy["spec"]["podSelector"]["matchLabels"].items() <= selected:
            continue
        home = policy["metadata"]["namespace"]
        peers = [peer for rule in policy["spec"]["ingress"] for peer in rule.get("from", [])]
        admits = any(
            ("podSelector" in peer and "namespaceSelector" not in peer and client == home)
            or peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": client}
            for peer in peers
        )
        if not admits:
            yield f"networkpolicy/{policy['metadata']['name']} admits no pod of namespace {client}"


def _patch(call: Invocation, objects: list[Document]) -> Iterator[str]:
    """The runbook's patch applied to what we deploy: kubectl must take it, and the result be valid."""
    for original in objects:
        where = f"{original['kind'].lower()}/{original['metadata']['name']}"
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "object.yaml"
            path.write_text(yaml.safe_dump(original))
            patch = call.flag("-p", "--patch") or ""
            strategy = call.flag("--type") or "strategic"
            local = [kubectl(), "patch", "--local", "-f", str(path), "--type", strategy, "-p", patch, "-o", "yaml"]
            result = subprocess.run(local, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            yield f"patch of {where}: {result.stderr.strip().splitlines()[0]}"
            continue
        patched = yaml.safe_load(result.stdout)
        try:
            validate(patched)
        except Exception as error:  # any schema's error: the message is the finding
            yield f"patch of {where}: {str(error).splitlines()[0]}"
        if original["kind"] == "Deployment":
            for container in patched["spec"]["template"]["spec"]["containers"]:
                if "image" not in container:
                    yield f"container {container['name']}"
        if original["kind"] == "Service" and len(patched["spec"]["ports"]) != len(original["spec"]["ports"]):
            yield f"patch of {where}: adds a port"


def _copied(call: Invocation, deployed: Deployed) -> Iterator[str]:
    """`kubectl cp FILE NAMESPACE/POD:PATH` writes through a volume: the root filesystem is read-only."""
    writable = [
        m["mountPath"] for c in deployed.containers() for m in c.get("volumeMounts", []) if not m.get("readOnly")
    ]
    for match in filter(None, (COPIED.fullmatch(word) for word in call.positional)):
        if not any(match[3].rstrip("/").startswith(mount.rstrip("/")) for mount in writable):
            yield f"{match[3]} on no volume (the root filesystem is read-only)"


def _created(call: Invocation, deployed: Deployed) -> Iterator[str]:
    """A Secret or ConfigMap the runbook creates must be one the pods read, with the keys they read."""
    kind, name = call.verb[1], (call.positional or [""])[0]
    if call.verb == ["create", "secret", "docker-registry"]:
        accounts = {pod["spec"].get("serviceAccountName", "default") for pod in deployed.pods()}
        pulls = {s["name"] for pod in deployed.pods() for s in pod["spec"].get("imagePullSecrets", [])}
        if name not in pulls and "default" not in accounts:
            yield f"secret/{name}"
    elif kind == "secret":
        read = deployed.secrets()
        given = {value.split("=", 1)[0] for value in call.flags.get("--from-literal", [])}
        given |= {"tls.crt", "tls.key"} if call.verb[2] == "tls" else set()
        if name not in read:
            yield f"secret/{name}"
        yield from (f"key {key} of secret/{name}" for key in sorted(read.get(name, set()) - given))
    elif kind == "configmap" and name not in deployed.config_maps():
        yield f"configmap/{name}"


def _compose(call: Invocation, deployed: Deployed) -> Iterator[str]:
    file = next((value for value in call.flags.get("-f", []) + call.flags.get("--file", []) if value), "")
    if not (ROOT / file).is_file() or (ROOT / file).resolve() != (ROOT / deployed.compose_file).resolve():
        yield f"compose file {file}"
    if call.verb[:1] in (["logs"], ["restart"], ["stop"], ["start"], ["exec"], ["up"], ["ps"]):
        services = call.positional[:1] if call.verb == ["exec"] else call.positional
        yield from (f"compose service {s}" for s in services if s not in deployed.compose["services"])

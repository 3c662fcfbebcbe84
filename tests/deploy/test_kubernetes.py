"""The kustomize base and overlays render, match the Kubernetes schemas, and keep the server's contract.

The contract: the objects carry the names the runbooks use, the probes reach the health endpoints, the
settings are ones the server documents, the pod runs unprivileged on a read-only root, the grace period
outlasts the drain, the autoscaler reads the queue depth, and prod runs three or more GPU pods spread
over nodes and zones, with the model cache on the SSD class, behind an HTTPS Ingress.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from modelserve.config import Settings
from tests.deploy.manifests import (
    KUSTOMIZATIONS,
    Document,
    container,
    one,
    render,
    undocumented,
    validate,
)
from tests.deploy.tools import DEPLOY, ROOT

NAMES = list(KUSTOMIZATIONS)
PROBES = {"startupProbe": "/health/startup", "livenessProbe": "/health/live", "readinessProbe": "/health/ready"}


def _pod(docs: list[Document]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]


def _port(docs: list[Document], name: str) -> int:
    return next(p["containerPort"] for p in container(docs)["ports"] if p["name"] == name)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


@pytest.mark.parametrize("name", NAMES)
def test_every_document_matches_its_schema_in_the_model_serving_namespace(name: str) -> None:
    docs = render(name)
    assert docs
    for doc in docs:
        validate(doc)
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "model-serving"
        else:
            assert doc["metadata"]["namespace"] == "model-serving", f"{doc['kind']} outside the namespace"


@pytest.mark.parametrize("name", NAMES)
def test_the_objects_carry_the_names_the_runbooks_use(name: str) -> None:
    docs = render(name)
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    assert {("Deployment", "model-serving"), ("Service", "model-serving")} <= names
    assert _pod(docs)["metadata"]["labels"]["app"] == "model-serving"
    assert one(docs, "Deployment")["spec"]["selector"]["matchLabels"] == {"app": "model-serving"}
    assert container(docs)["name"] == "model-serving"
    if name != "dev":
        assert ("HorizontalPodAutoscaler", "model-serving-hpa") in names
    assert (("Ingress", "model-serving-ingress") in names) == (name == "prod")


def test_validation_refuses_misspelt_fields_and_unknown_kinds() -> None:
    deployment = copy.deepcopy(one(render("base"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = copy.deepcopy(one(render("base"), "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    rule = copy.deepcopy(one(render("base"), "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["annotation"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)
    rule = copy.deepcopy(one(render("base"), "PrometheusRule"))
    rule["spec"]["groups"].append(rule["spec"]["groups"][0])
    with pytest.raises(jsonschema.ValidationError, match="two items"):
        validate(rule)
    with pytest.raises(SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


@pytest.mark.parametrize("name", NAMES)
def test_probes_reach_the_health_endpoints_on_the_http_port(name: str) -> None:
    docs = render(name)
    serving = container(docs)
    assert _port(docs, "http") == 8000
    assert _port(docs, "grpc") == 8001
    for probe, path in PROBES.items():
        check = serving[probe]["httpGet"]
        assert (check["path"], check["port"]) == (path, "http"), probe
    # The startup probe, not liveness, covers model loading: liveness must not kill a pod still loading.
    startup = serving["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("name", NAMES)
def test_service_policy_and_monitor_reach_the_pods_ports(name: str) -> None:
    docs = render(name)
    labels = _pod(docs)["metadata"]["labels"]
    port_names = {p["name"] for p in container(docs)["ports"]}
    service = one(docs, "Service")
    assert _selects(service["spec"]["selector"], labels)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    # HTTP on 80, as the runbooks reach it (http://model-serving.model-serving.svc.cluster.local/health).
    assert (ports["http"]["port"], ports["grpc"]["port"]) == (80, 8001)
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert {p["targetPort"] for p in ports.values()} <= port_names
    policy = one(docs, "NetworkPolicy")
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    opened = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert opened == {"http", "grpc"}, "ingress on the serving ports only"
    for monitor in (doc for doc in docs if doc["kind"] == "ServiceMonitor"):
        assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    for budget in (doc for doc in docs if doc["kind"] == "PodDisruptionBudget"):
        assert _selects(budget["spec"]["selector"]["matchLabels"], labels)


@pytest.mark.parametrize("name", NAMES)
def test_settings_come_from_the_generated_configmap_and_are_documented(name: str) -> None:
    docs = render(name)
    config = one(docs, "ConfigMap")
    assert config["metadata"]["name"].startswith("modelserve-config-"), "generated, with a content hash"
    serving = container(docs)
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in serving["envFrom"]
    assert undocumented(list(config["data"])) == []
    env = {item["name"]: item for item in serving["env"]}
    # A variable may exist only to be spliced into another one, as $(NAME).
    spliced = {m for item in env.values() for m in re.findall(r"\$\((\w+)\)", item.get("value", ""))}
    assert undocumented([n for n in env if n not in spliced]) == []
    assert env["INFERENCE_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert config["data"]["HOST"] == "0.0.0.0"
    assert config["data"]["LOG_FORMAT"] in {"json", "console"}


@pytest.mark.parametrize("name", NAMES)
def test_the_pod_runs_unprivileged_on_a_read_only_root_with_writable_scratch(name: str) -> None:
    docs = render(name)
    pod = _pod(docs)["spec"]
    serving = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    security = serving["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in serving["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]
    assert "ephemeral" in mounts[one(docs, "ConfigMap")["data"]["MODEL_CACHE_DIR"]], "a claim per pod"
    image = serving["image"]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"no tag on {image}"
    assert not image.endswith(":latest"), image
    assert {"cpu", "memory"} <= serving["resources"]["requests"].keys() & serving["resources"]["limits"].keys()


@pytest.mark.parametrize("name", NAMES)
def test_the_grace_period_outlasts_the_pause_and_the_drain(name: str) -> None:
    docs = render(name)
    pod = _pod(docs)["spec"]
    serving = container(docs)
    drain = int(next(item["value"] for item in serving["env"] if item["name"] == "SHUTDOWN_GRACE_SEC"))
    pause = serving["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pause[1]) + drain


@pytest.mark.parametrize("name", NAMES)
def test_memory_limits_refuse_loads_then_fail_liveness_before_the_container_limit(name: str) -> None:
    docs = render(name)
    config = one(docs, "ConfigMap")["data"]
    limit_mib = _mebibytes(container(docs)["resources"]["limits"]["memory"])
    soft, hard = float(config["MEMORY_SOFT_LIMIT_MB"]), float(config["MEMORY_HARD_LIMIT_MB"])
    assert 0.8 * limit_mib <= soft < hard <= 0.92 * limit_mib, (soft, hard, limit_mib)


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("name", NAMES)
def test_prometheus_scrapes_the_http_port(name: str) -> None:
    docs = render(name)
    annotations = _pod(docs)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == _port(docs, "http")


def test_the_container_is_the_one_the_alerts_select() -> None:
    """ModelPodRestarting counts restarts of a container by name."""
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    named = {m for g in groups for r in g["rules"] for m in re.findall(r'container="([^"]+)"', r["expr"])}
    assert named
    for name in NAMES:
        assert named == {container(render(name))["name"]}


@pytest.mark.parametrize("name", ["base", "prod"])
def test_the_autoscaler_follows_cpu_the_queues_and_the_requests_in_flight(name: str) -> None:
    """The per-pod metrics and the adapter rules serving them: tests/deploy/test_autoscaling.py."""
    docs = render(name)
    scaler = one(docs, "HorizontalPodAutoscaler")
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "model-serving"}
    [cpu] = [m["resource"] for m in scaler["spec"]["metrics"] if m["type"] == "Resource"]
    assert cpu["name"] == "cpu"
    pods = {m["pods"]["metric"]["name"] for m in scaler["spec"]["metrics"] if m["type"] == "Pods"}
    expected = {
        "model_serving_queue_depth",
        "model_serving_requests_in_flight",
        "model_serving_queue_duration_seconds_mean",
    }
    assert pods == expected
    exported = (ROOT / "docs" / "METRICS.md").read_text()
    for metric in ("model_serving_queue_depth", "model_serving_requests_in_flight"):
        assert f"`{metric}`" in exported, "the server exports it"
    # The autoscaler owns the replica count; a replicas field would reset it on every apply.
    assert "replicas" not in one(docs, "Deployment")["spec"]
    budget = one(docs, "PodDisruptionBudget")
    assert 1 <= budget["spec"]["minAvailable"] < scaler["spec"]["minReplicas"], "a drain can always evict one pod"


def test_prod_runs_three_or_more_gpu_pods_spread_over_nodes_and_zones() -> None:
    docs = render("prod")
    pod = _pod(docs)["spec"]
    resources = container(docs)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    labels = _pod(docs)["metadata"]["labels"]
    assert any(
        term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        and _selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
        for term in anti
    )
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert _selects(spread["topology.kubernetes.io/zone"]["labelSelector"]["matchLabels"], labels)
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] >= 2
    assert container(docs)["image"] != container(render("base"))["image"], "prod pins the GPU image"
    assert "nvidia.com/gpu" not in container(render("base"))["resources"]["limits"]


def test_dev_runs_one_small_pod_with_debug_logs() -> None:
    docs = render("dev")
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    left_out = {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "Ingress"}
    assert left_out.isdisjoint(doc["kind"] for doc in docs)
    settings = one(docs, "ConfigMap")["data"]
    assert (settings["LOG_LEVEL"], settings["LOG_FORMAT"]) == ("debug", "console")
    assert container(docs)["resources"]["limits"]["cpu"] == "1"


@pytest.mark.parametrize("name", NAMES)
def test_the_history_database_url_comes_from_a_secret_required_in_prod(name: str) -> None:
    """The pre-warming policy learns from the history: SQLite on each pod's model cache unless the Secret
    names a PostgreSQL, which prod requires (shared by the pods, kept across rollouts)."""
    docs = render(name)
    env = {item["name"]: item for item in container(docs)["env"]}
    reference = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "modelserve-database", "key": "url", "optional": name != "prod"}
    assert "DATABASE_URL" not in one(docs, "ConfigMap")["data"], "a password never goes in a ConfigMap"


@pytest.mark.parametrize("name", NAMES)
def test_pre_warming_runs_predictive_within_a_share_of_the_container_limit(name: str) -> None:
    docs = render(name)
    config = one(docs, "ConfigMap")["data"]
    ours = {key.lower(): value for key, value in config.items() if key.lower() in Settings.model_fields}
    settings = Settings(**ours)  # the server would start with them
    assert (settings.model_control_mode.value, settings.prewarm_policy.value) == ("on-demand", "predictive")
    assert settings.model_memory_budget_mb == 0, "derived from the limit, not a number to keep in step with it"
    limit_mib = _mebibytes(container(docs)["resources"]["limits"]["memory"])
    # The models' budget ends well below the soft limit, where loads are refused instead of making room.
    assert 0.4 * limit_mib <= settings.model_memory_budget_fraction * limit_mib < 0.9 * settings.memory_soft_limit_mb
    assert config["MODEL_CACHE_DIR"] in {m["mountPath"] for m in container(docs)["volumeMounts"]}, "the history's"


@pytest.mark.parametrize("name", NAMES)
def test_the_api_keys_come_from_the_optional_secret_the_runbook_creates(name: str) -> None:
    """`kubectl create secret generic api-keys --from-literal=key1=$NEW_API_KEY`; without it, auth is off."""
    env = {item["name"]: item for item in container(render(name))["env"]}
    assert env["API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "api-keys", "key": "key1", "optional": True}
    assert undocumented(["API_KEYS"]) == []


def _model_cache_claim(docs: list[Document]) -> dict[str, Any]:
    volume = next(v for v in _pod(docs)["spec"]["volumes"] if v["name"] == "model-cache")
    claim: dict[str, Any] = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
    return claim


def test_the_model_cache_is_a_claim_per_pod_on_the_ssd_class_in_prod() -> None:
    claims = {name: _model_cache_claim(render(name)) for name in NAMES}
    for claim in claims.values():
        assert claim["accessModes"] == ["ReadWriteOnce"], "one pod's own cache"
    assert claims["prod"]["storageClassName"] == "fast-ssd"
    assert "storageClassName" not in claims["base"], "the cluster's default class"
    sizes = {name: _mebibytes(claim["resources"]["requests"]["storage"]) for name, claim in claims.items()}
    assert sizes["dev"] < sizes["base"] < sizes["prod"]
    assert one(render("prod"), "ConfigMap")["data"]["MODEL_CACHE_DIR"] == "/models", "where the runbooks copy models"


def test_prod_serves_https_through_the_ingress_the_runbooks_name() -> None:
    docs = render("prod")
    ingress = one(docs, "Ingress")
    assert [tls["secretName"] for tls in ingress["spec"]["tls"]] == ["tls-secret"]
    hosts = {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
    backends = [p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {rule["host"] for rule in ingress["spec"]["rules"]} == hosts
    assert backends == [{"name": "model-serving", "port": {"name": "http"}}]
    assert {p["name"] for p in one(docs, "Service")["spec"]["ports"]} >= {"http"}
    # ingress-nginx reaches the pods through the NetworkPolicy, on the HTTP port.
    policy = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "ingress-nginx"}
        and [port["port"] for port in rule["ports"]] == ["http"]
        for rule in policy
        for peer in rule["from"]
    )
    # The server's limits answer before the proxy's: its body size (413) and its timeout (504).
    annotations = ingress["metadata"]["annotations"]
    settings = one(docs, "ConfigMap")["data"]
    body_mib = float(settings.get("MAX_INPUT_SIZE_MB", Settings().max_input_size_mb))
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{body_mib:g}m"
    timeout = float(settings["REQUEST_TIMEOUT_SEC"])
    assert float(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > timeout
    assert float(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > timeout

"""deploy/kubernetes/replication renders, matches the Kubernetes schemas, and runs the replication service
the way the tests run it: the regions file where REGIONS_FILE says, /metrics where the monitor scrapes."""

from __future__ import annotations

from pathlib import Path

from modelserve.regions.config import load_regions
from tests.deploy.manifests import documents, one, run_kubectl, validate
from tests.deploy.tools import DEPLOY

FOLDER = DEPLOY / "kubernetes" / "replication"


def test_the_replication_service_renders_valid_and_consistent(tmp_path: Path) -> None:
    docs = documents(run_kubectl("kustomize", str(FOLDER)))
    for document in docs:
        validate(document)
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["name"] == "replication-service"  # the runbook's `kubectl logs deployment/...`
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["command"][:3] == ["modelserve", "regions", "serve"]
    port = int(container["command"][container["command"].index("--metrics-port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    env = {item["name"]: item for item in container["env"]}
    config = one(docs, "ConfigMap")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "regions")
    assert env["REGIONS_FILE"]["value"] == f"{mount['mountPath']}/regions.yaml"
    assert (
        next(v for v in pod["spec"]["volumes"] if v["name"] == "regions")["configMap"]["name"]
        == config["metadata"]["name"]
    )
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "modelserve-database", "the servers' database"
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(port, "metrics")]
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("metrics", "/metrics")]
    regions_file = tmp_path / "regions.yaml"
    regions_file.write_text(config["data"]["regions.yaml"])
    regions = load_regions(regions_file)
    assert regions.names == ["us-east-1", "eu-west-1", "ap-southeast-1"]
    assert all(r.store.credentials.access_key_id_env for r in regions.regions), "keys come from the Secret"

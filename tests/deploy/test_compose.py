"""deploy/docker-compose.yml: a valid Compose file whose services, mounts and addresses fit together, also
as the runbooks name it, docker/docker-compose.yml from the repository root.

`docker compose config` would check the file without an engine, but Debian bookworm packages only
Compose v1, so the file is validated against the Compose Specification's JSON schema instead
(tests/deploy/schemas/README.md says where it comes from). Prometheus' configuration goes through
promtool, as the alert rules do.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from modelserve.regions.router import RouterSettings
from tests.deploy import promql
from tests.deploy.manifests import undocumented
from tests.deploy.tools import DEPLOY, ROOT, tool

COMPOSE = DEPLOY / "docker-compose.yml"
# `docker-compose -f docker/docker-compose.yml logs -f model-serving`, as the runbooks have it.
LINKED = ROOT / "docker" / "docker-compose.yml"
SERVER = "model-serving"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a service, container path to host path (resolved from the compose file's folder)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = str((COMPOSE.parent / source).resolve())
    return mounts


def test_the_runbooks_path_names_this_file_and_its_relative_paths_resolve_the_same() -> None:
    """Compose takes relative paths from the folder of the -f path, as written: docker/ from the root."""
    assert LINKED.resolve() == COMPOSE.resolve()
    sources = [_services()[SERVER]["build"]["context"]]
    sources += [v.split(":")[0] for s in _services().values() for v in s.get("volumes", []) if v.startswith(".")]
    assert len(sources) >= 5
    for source in sources:
        written = Path(os.path.normpath(LINKED.parent / source))
        assert written.exists(), f"{source} from docker/ is {written}, which does not exist"
        assert written.resolve() == (COMPOSE.parent / source).resolve(), source


def test_the_file_matches_the_compose_specification() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    problems = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert problems == []
    broken = dict(_compose())
    broken["services"] = {SERVER: {**_services()[SERVER], "healtcheck": {}}}
    assert not validator.is_valid(broken), "the schema refuses unknown keys"


def test_the_stack_has_every_service_and_pins_every_image() -> None:
    services = _services()
    assert {SERVER, "prometheus", "grafana", "jaeger", "alertmanager", "postgres"} <= services.keys()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image, f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on {dependency}, which is not a service"
    assert services[SERVER]["image"] == f"modelserve:{version}"


def test_every_bind_mount_source_exists() -> None:
    for name, service in _services().items():
        for target, source in _mounts(service).items():
            assert Path(source).exists(), f"{name} mounts {source} at {target}, and it does not exist"


def test_modelserve_builds_the_image_and_serves_the_mounted_example_repository() -> None:
    service = _services()[SERVER]
    build = service["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).is_file()
    assert {"8000:8000", "8001:8001"} <= set(service["ports"])
    env = service["environment"]
    assert undocumented(list(env)) == []
    mounts = _mounts(service)
    assert mounts[env["MODEL_REPOSITORY"]] == str(ROOT / "examples" / "model_repository")
    assert "/tmp" in service["tmpfs"]
    assert service["read_only"] is True


def test_traces_go_to_jaeger_over_otlp_grpc() -> None:
    services = _services()
    env = services[SERVER]["environment"]
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (endpoint.hostname, endpoint.port) == ("jaeger", 4317)
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_SERVICE_NAME"] == "modelserve"
    assert float(env["TRACE_SAMPLE_RATE"]) == 1
    jaeger = services["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "4317:4317" in jaeger["ports"]


def test_the_traffic_store_is_the_postgres_service() -> None:
    services = _services()
    url = urlsplit(services[SERVER]["environment"]["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert url.scheme == "postgresql+psycopg"
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert (url.username, url.password, url.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    return config


def test_promtool_accepts_the_prometheus_config() -> None:
    directory = DEPLOY / "prometheus"
    result = subprocess.run(
        [tool("promtool"), "check", "config", "prometheus.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_modelserve_loads_the_rules_and_alerts_alertmanager(
    prometheus_config: dict[str, Any],
) -> None:
    services = _services()
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    assert mounts[config_path] == str(DEPLOY / "prometheus" / "prometheus.yml")
    # Rule files are found relative to the configuration, in the container as here.
    for rules in prometheus_config["rule_files"]:
        assert mounts[str(Path(config_path).parent / rules)] == str(DEPLOY / "prometheus" / rules)
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    # The job named as the ServiceMonitor names it in Kubernetes (after the Service), so queries work in both.
    assert jobs[SERVER]["metrics_path"] == "/metrics"
    assert [t for s in jobs[SERVER]["static_configs"] for t in s["targets"]] == [f"{SERVER}:8000"]
    # The router's exporter, on the port router-config gives it, for the alert rules on haproxy_* figures.
    router = [t for s in jobs["router"]["static_configs"] for t in s["targets"]]
    assert router == [f"router:{RouterSettings().metrics_port}"]
    assert any("haproxy_" in rule.expr for rule in promql.rule_queries())
    alerting = prometheus_config["alerting"]["alertmanagers"]
    managers = [t for manager in alerting for s in manager["static_configs"] for t in s["targets"]]
    assert managers == ["alertmanager:9093"]
    assert "9093:9093" in services["alertmanager"]["ports"]


def test_grafana_finds_its_dashboards_and_data_sources_inside_the_stack() -> None:
    services = _services()
    grafana = _mounts(services["grafana"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert grafana["/etc/grafana/provisioning"] == str(provisioning)
    providers = [
        p for f in (provisioning / "dashboards").glob("*.y*ml") for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert providers
    for provider in providers:
        assert grafana[provider["options"]["path"]] == str(DEPLOY / "grafana" / "dashboards")
    sources = [
        s for f in (provisioning / "datasources").glob("*.y*ml") for s in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert sources
    for source in sources:
        address = urlsplit(source["url"])
        assert address.hostname in services, f"data source {source['name']} points outside the stack: {source['url']}"
        published = {int(port.split(":")[-1]) for port in services[address.hostname].get("ports", [])}
        assert address.port in published, source["url"]


def test_alertmanager_reads_the_mounted_configuration() -> None:
    alertmanager = _services()["alertmanager"]
    flag = next(arg for arg in alertmanager["command"] if arg.startswith("--config.file="))
    assert _mounts(alertmanager)[flag.split("=", 1)[1]] == str(DEPLOY / "alertmanager" / "alertmanager.yml")

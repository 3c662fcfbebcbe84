"""The KServe runtime (deploy/kserve): the ClusterServingRuntime and the example InferenceService match
KServe's CRD schemas; the runtime has the shape of KServe's own for Triton and is chosen as KServe chooses
(formats, protocols); its container runs `modelserve serve` on KServe's model mount and ports, as the
server's command line reads them; and a server so started serves the readiness probe and the metrics
path the runtime declares."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.main import get_command

from modelserve.cli import app
from modelserve.config import Settings
from tests.deploy.dockerfile import parse
from tests.deploy.manifests import Document, container, documents, one, render, render_path, validate
from tests.deploy.tools import DEPLOY, ROOT
from tests.protocol.serving import serving

EXAMPLE = DEPLOY / "kserve" / "inferenceservice.yaml"
# KServe's names (kserve/kserve v0.20.0, pkg/constants/constants.go): the protocols a runtime may speak,
# the serving container's name, where the storage initializer puts the model, the HTTP port it routes to.
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
CONTAINER = "kserve-container"
MODEL_MOUNT = "/mnt/models"
HTTP_PORT = 8080
# The format KServe names → the package whose major version the format's version is, in our pins.
FORMATS = {
    "onnx": ("onnx", ROOT / "constraints.txt"),
    "pytorch": ("torch", ROOT / "constraints.txt"),
    "sklearn": ("scikit-learn", ROOT / "constraints.txt"),
    "tensorrt": ("tensorrt", DEPLOY / "docker" / "constraints-gpu.txt"),
}


def _runtime() -> Document:
    return one(render_path("deploy/kserve"), "ClusterServingRuntime")


def _example() -> Document:
    [service] = documents(EXAMPLE.read_text())
    return service


def _settings(arguments: list[str]) -> Settings:
    """The settings `modelserve serve ARGUMENTS` starts with, its options read by its own parser."""
    command = get_command(app).commands["serve"]  # type: ignore[attr-defined]
    given = command.make_context("serve", list(arguments)).params
    options: dict[str, Any] = {name: value for name, value in given.items() if value not in (None, ())}
    if "load_model" in options:
        options["load_models"] = list(options.pop("load_model"))
    return Settings.from_options(**options)


def _supports(runtime: Document, model: dict[str, Any]) -> bool:
    """KServe's choice (pkg/apis/serving/v1beta1/predictor_model.go, RuntimeSupportsModel and the protocol
    check): the model's format label among the runtime's, every format counting when the model names the
    runtime and only auto-selected ones otherwise; its protocol among the runtime's. A model that names no
    protocol is taken to speak v1, unless it names the runtime, whose protocol it is then given."""
    spec = runtime["spec"]
    named = model.get("runtime") is not None
    labels = set()
    for supported in spec["supportedModelFormats"]:
        if named or supported.get("autoSelect"):
            labels.add(f"mt:{supported['name']}")
            if "version" in supported:
                labels.add(f"mt:{supported['name']}:{supported['version']}")
    wanted = model["modelFormat"]
    label = f"mt:{wanted['name']}" + (f":{wanted['version']}" if "version" in wanted else "")
    protocol = model.get("protocolVersion", spec["protocolVersions"][0] if named else "v1")
    return label in labels and protocol in spec["protocolVersions"]


def test_the_runtime_and_the_example_match_kserves_schemas() -> None:
    for doc in [*render_path("deploy/kserve"), _example()]:
        validate(doc)
    assert "namespace" not in _runtime()["metadata"], "a ClusterServingRuntime is cluster-wide"
    assert "namespace" not in _example()["metadata"], "applied to the namespace that serves it"


def test_validation_refuses_misspelt_fields() -> None:
    runtime = copy.deepcopy(_runtime())
    runtime["spec"]["supportedModelFormat"] = runtime["spec"].pop("supportedModelFormats")
    with pytest.raises(jsonschema.ValidationError, match="supportedModelFormat"):
        validate(runtime)
    service = copy.deepcopy(_example())
    service["spec"]["predictor"]["model"]["storageUrl"] = service["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError, match="storageUrl"):
        validate(service)


def test_the_runtime_has_the_shape_of_kserves_triton_runtime() -> None:
    spec = _runtime()["spec"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    assert set(spec["protocolVersions"]) <= PROTOCOLS
    [serving_container] = spec["containers"]
    assert serving_container["name"] == CONTAINER
    assert {f["name"] for f in spec["supportedModelFormats"]} == set(FORMATS)
    for supported in spec["supportedModelFormats"]:
        # No priority: KServe's own runtimes keep the formats they auto-select (their priorities win), and
        # its admission webhook, which refuses two runtimes with one priority for a format, finds no clash.
        assert supported["autoSelect"] is True, supported
        assert "priority" not in supported, supported
    settings = _settings(serving_container["args"])
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(settings.http_port)
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    probe = serving_container["readinessProbe"]["httpGet"]
    assert probe["port"] == settings.http_port
    security = serving_container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in serving_container["volumeMounts"]}
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"]), "the one writable place"


def test_each_format_names_the_major_version_the_image_serves_it_with() -> None:
    for supported in _runtime()["spec"]["supportedModelFormats"]:
        package, pins = FORMATS[supported["name"]]
        pinned = re.search(rf"^{re.escape(package)}==(\d+)\.", pins.read_text(), re.M)
        assert pinned, f"{package} is not pinned in {pins.name}"
        assert supported["version"] == pinned[1], supported


def test_the_container_runs_modelserve_on_kserves_model_mount_and_ports() -> None:
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        [entrypoint] = parse(DEPLOY / "docker" / dockerfile)[-1].all("ENTRYPOINT")
        assert entrypoint.exec_form() == ["modelserve", "serve"], "the runtime's args are serve's options"
    [serving_container] = _runtime()["spec"]["containers"]
    settings = _settings(serving_container["args"])
    assert settings.model_repository == MODEL_MOUNT
    assert settings.http_port == HTTP_PORT
    assert settings.grpc_port == 9000, "the gRPC port of KServe's Triton runtime"
    assert settings.host == "0.0.0.0"
    assert serving_container["image"] == container(render("prod"))["image"], "the GPU image prod runs"


def test_kserve_chooses_the_runtime_for_the_example_and_by_format() -> None:
    runtime = _runtime()
    model = _example()["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert _supports(runtime, model)
    assert model["storageUri"].startswith("s3://")
    for supported in runtime["spec"]["supportedModelFormats"]:
        format_only = {"modelFormat": {"name": supported["name"]}, "protocolVersion": "v2"}
        assert _supports(runtime, format_only), supported
    assert not _supports(runtime, {"modelFormat": {"name": "onnx"}}), "KServe's default protocol is v1"
    assert _supports(runtime, {"modelFormat": {"name": "onnx"}, "runtime": "modelserve"}), "unless it is named"
    assert not _supports(runtime, {"modelFormat": {"name": "tensorflow"}, "runtime": "modelserve"})


def _within(shown: Any, actual: Any) -> bool:
    """Whether ``shown`` is ``actual`` with some mapping keys left out."""
    if isinstance(shown, dict):
        return isinstance(actual, dict) and all(key in actual and _within(shown[key], actual[key]) for key in shown)
    return bool(shown == actual)


def test_the_guide_shows_the_example_as_it_is() -> None:
    blocks = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "docs" / "DEPLOYMENT.md").read_text(), re.S | re.M)
    shown = [yaml.safe_load(block) for block in blocks if "predictor:" in block]
    assert shown, "the guide shows no InferenceService"
    for document in shown:
        assert _within(document, _example()), document


def test_a_server_started_as_the_runtime_starts_it_answers_the_probe_and_the_metrics_path(
    built_repository: Path, tmp_path: Path
) -> None:
    """A repository as the storage initializer leaves it (the InferenceService's model folder), served with
    the runtime's settings: the readiness probe answers once the model serves, and /metrics has it."""
    [serving_container] = _runtime()["spec"]["containers"]
    settings = _settings(serving_container["args"])
    models = tmp_path / "mnt" / "models"
    shutil.copytree(built_repository / "mlp", models / "mlp")
    options: dict[str, Any] = {
        "host": settings.host,
        "http_port": settings.http_port,
        "grpc_port": 0,  # the HTTP app is what is checked, in-process: no port is bound
        "model_control_mode": settings.model_control_mode,
        "load_models": settings.load_models,
    }
    probe = serving_container["readinessProbe"]["httpGet"]["path"]
    metrics = _runtime()["spec"]["annotations"]["prometheus.kserve.io/path"]
    with serving(models, ready_path=probe, **options) as client:
        assert client.get("/v2/models/mlp/ready").status_code == 200
        response = client.get(metrics)
        assert response.status_code == 200
        assert "model_serving_models_loaded 1.0" in response.text

"""The Dockerfiles: two stages, an unprivileged final image, a health check that works, pinned inputs.

No image is built here (there is no Docker engine); what can be checked without one is: the files'
structure, that the build context holds what they copy, and that the health check command itself
tells a live server from a failing one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.dockerfile import Stage, parse
from tests.deploy.manifests import container, one, render, undocumented
from tests.deploy.tools import DEPLOY, ROOT

DOCKERFILES = {"cpu": DEPLOY / "docker" / "Dockerfile", "gpu": DEPLOY / "docker" / "Dockerfile.gpu"}
KINDS = list(DOCKERFILES)
HOME = "/home/modelserve"
# What the runbooks run inside a pod, from its working directory (docs/RUNBOOK.md#scripts).
IN_POD_SCRIPTS = [
    "scripts/warmup-models.py",
    "scripts/preload-models.sh",
    "scripts/test-inference.sh",
    "scripts/smoke-test.sh",
    "scripts/integration-test.sh",
]


def _final(kind: str) -> Stage:
    return parse(DOCKERFILES[kind])[-1]


def _pin(requirements: str, package: str) -> str:
    """The version a requirements or constraints text pins ``package`` to."""
    match = re.search(rf"^{re.escape(package)}==([\w.+]+)", requirements, re.M)
    assert match, f"{package} is not pinned"
    return match[1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_builder_stage_and_a_final_stage_that_receives_only_the_environment_and_the_scripts(kind: str) -> None:
    builder, *_, final = parse(DOCKERFILES[kind])
    assert builder.name == "builder"
    assert final.image == builder.image, "the final stage starts from the same base, without build leftovers"
    copies = [(c.flags.get("from"), c.words()) for c in final.all("COPY")]
    assert copies == [("builder", ["/opt/venv", "/opt/venv"]), (None, ["scripts", f"{HOME}/scripts"])]
    assert not any("pip install" in run.arguments for run in final.all("RUN")), "installs happen in the builder"
    assert final.env()["PATH"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("kind", KINDS)
def test_the_runbooks_scripts_are_where_the_pod_runs_them(kind: str) -> None:
    final = _final(kind)
    assert final.all("WORKDIR")[-1].arguments == HOME, "hooks and `kubectl exec` start in the working directory"
    copied = next(c.words() for c in final.all("COPY") if c.words()[0] == "scripts")
    assert copied[-1] == f"{HOME}/scripts"
    # The runbooks' commands run in a pod: a postStart hook, an init container (which runs a shell script
    # with python, as written), and what an operator runs with `kubectl exec` from the working directory.
    commands = (ROOT / "tests" / "deploy" / "runbook_commands.txt").read_text()
    assert 'command: ["python", "scripts/warmup-models.py"]' in commands
    for path in IN_POD_SCRIPTS:
        assert (ROOT / path).is_file(), path
        if path.endswith(".sh"):
            assert os.access(ROOT / path, os.X_OK), f"{path} is not executable: ./{path} would fail"
            assert (ROOT / path).read_text().startswith("#!/usr/bin/env bash\n")


@pytest.mark.parametrize("kind", KINDS)
def test_the_image_has_curl_and_no_package_lists(kind: str) -> None:
    installs = [run.arguments for run in _final(kind).all("RUN") if "apt-get install" in run.arguments]
    assert len(installs) == 1
    (install,) = installs
    words = install.split()
    assert "curl" in words, "the runbooks `kubectl exec ... -- curl localhost:8000/health`"
    assert "--no-install-recommends" in words
    steps = [step.strip() for step in install.split("&&")]
    assert steps.index("apt-get update") < next(i for i, s in enumerate(steps) if s.startswith("apt-get install"))
    assert "rm -rf /var/lib/apt/lists/*" in steps, "the package lists stay out of the layer"


@pytest.mark.parametrize("kind", KINDS)
def test_the_image_runs_as_the_numeric_user_the_pod_expects(kind: str) -> None:
    user = _final(kind).all("USER")[-1].arguments
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: Kubernetes' runAsNonRoot needs a numeric user"
    uid = int(user.split(":")[0])
    assert uid != 0
    deployment = one(render("base"), "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


@pytest.mark.parametrize("kind", KINDS)
def test_the_image_listens_on_all_addresses_and_serves_the_models_folder(kind: str) -> None:
    final = _final(kind)
    assert final.all("EXPOSE")[-1].words() == ["8000", "8001"]
    assert final.all("ENTRYPOINT")[-1].exec_form() == ["modelserve", "serve"]
    env = final.env()
    assert env["HOST"] == "0.0.0.0", "127.0.0.1 cannot be reached from outside the container"
    assert (env["HTTP_PORT"], env["GRPC_PORT"], env["MODEL_REPOSITORY"]) == ("8000", "8001", "/models")
    server_settings = [n for n in env if n != "PATH" and not n.startswith(("PYTHON", "PIP_"))]
    assert undocumented(server_settings) == []


@pytest.mark.parametrize("kind", KINDS)
def test_base_images_are_pinned(kind: str) -> None:
    for stage in parse(DOCKERFILES[kind]):
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", stage.image), f"FROM {stage.image} has no tag"
        assert not stage.image.endswith(":latest"), stage.image
    if kind == "gpu":
        assert re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", _final(kind).image)


@pytest.mark.parametrize("kind", KINDS)
def test_the_builder_installs_with_the_repository_constraints(kind: str) -> None:
    builder = parse(DOCKERFILES[kind])[0]
    copied = [word for c in builder.all("COPY") for word in c.words()[:-1]]
    assert "constraints.txt" in copied
    installs = [run.arguments for run in builder.all("RUN") if "'.[" in run.arguments]
    assert installs
    assert all("-c constraints.txt" in install for install in installs)


def test_cpu_image_takes_torch_from_the_cpu_index_at_the_pinned_version() -> None:
    builder = parse(DOCKERFILES["cpu"])[0]
    runs = [run.arguments for run in builder.all("RUN")]
    torch = next(i for i, run in enumerate(runs) if "download.pytorch.org/whl/cpu" in run)
    project = next(i for i, run in enumerate(runs) if "'.[" in run)
    assert torch < project, "torch is in place before the project's dependencies could pull PyPI's CUDA build"
    assert "--no-deps" in runs[torch]
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch]
    pinned = _pin((ROOT / "constraints.txt").read_text(), "torch")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["torch"]
    assert f"torch=={pinned}" in runs[torch].split()
    assert extra == [f"torch=={pinned}"]


def test_gpu_image_replaces_onnxruntime_with_its_gpu_build() -> None:
    builder = parse(DOCKERFILES["gpu"])[0]
    install = next(run.words() for run in builder.all("RUN") if "'.[" in run.arguments)
    project = next(word for word in install if word.startswith(".["))
    assert "gpu" in project[2:-1].split(","), "TensorRT and NVML come with the gpu extra"
    steps = " ".join(install)
    assert steps.index("pip uninstall -y onnxruntime") < steps.index("onnxruntime-gpu")
    assert "-c constraints-gpu.txt" in steps
    assert _pin((DEPLOY / "docker" / "constraints-gpu.txt").read_text(), "onnxruntime-gpu")


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health/live" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the check's exit status, not the server's log."""


@contextmanager
def _server(status: int) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join()


@pytest.mark.parametrize("kind", KINDS)
def test_the_health_check_passes_on_a_live_server_and_fails_otherwise(kind: str) -> None:
    keyword, _, command = _final(kind).all("HEALTHCHECK")[-1].arguments.partition(" ")
    assert keyword == "CMD"
    argv = json.loads(command)
    assert argv[0] == "python", "the check needs nothing but the server's own Python"
    assert "/health/live" in argv[-1]

    def run(status: int) -> int:
        with _server(status) as port:
            # As in the image: no proxy variables, only the port the server listens on.
            env = {"HTTP_PORT": str(port)}
            return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30).returncode

    assert run(200) == 0
    assert run(503) != 0


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (the last matching pattern decides)."""
    prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        globs = [glob, glob[3:]] if glob.startswith("**/") else [glob]
        if any(fnmatch(prefix, g) for prefix in prefixes for g in globs):
            ignored = not keep
    return ignored


def test_the_build_context_holds_what_the_dockerfiles_copy_and_nothing_heavy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    # The source files: tracked, or new and not ignored by git.
    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(listing, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for path in DOCKERFILES.values():
        for stage in parse(path):
            for copy in stage.all("COPY"):
                if "from" in copy.flags:
                    continue
                for source in copy.words()[:-1]:
                    assert (ROOT / source).exists(), f"{path.name} copies {source}, which does not exist"
                    files = [f for f in tracked if f == source or f.startswith(source.rstrip("/") + "/")]
                    assert files, source
                    assert [f for f in files if _ignored(f, patterns)] == [], f".dockerignore drops part of {source}"
    for heavy in (".venv/bin/python", ".git/HEAD", "examples/model_repository/mlp/1/model.onnx", "tests/conftest.py"):
        assert _ignored(heavy, patterns), heavy
    assert _ignored("src/modelserve/__pycache__/cli.cpython-311.pyc", patterns)
    assert _ignored("scripts/lib/__pycache__/backup.cpython-311.pyc", patterns)


def test_kubernetes_runs_the_image_under_the_project_version() -> None:
    """The base manifests run the CPU image under the project's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container(render("base"))["image"] == f"modelserve:{version}"

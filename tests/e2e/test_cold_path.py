"""A server imports a runtime's library only when a model of its kind loads.

PyTorch costs about 0.9 s of CPU and 190 MiB to import, scikit-learn (the example's iris pipeline)
about 0.9 s and 100 MiB (docs/PERFORMANCE.md, Cold path), so a server that serves neither must not pay
for them. The server process itself is asked: its shared libraries, read from /proc/<pid>/maps, are
mapped when the library is imported, whatever module imported it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import RunningServer, serve

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps (Linux)")

MLP = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
IRIS = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
SIMPLE = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]
}


def mapped(server: RunningServer) -> list[str]:
    """Paths of the files the server process has mapped into memory."""
    lines = Path(f"/proc/{server.process.pid}/maps").read_text().splitlines()
    return sorted({line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6})


def torch_mapped(server: RunningServer) -> list[str]:
    """libtorch_cpu.so, libtorch_python.so... : mapped as soon as `import torch` runs."""
    return [path for path in mapped(server) if Path(path).name.startswith("libtorch")]


def sklearn_mapped(server: RunningServer) -> list[str]:
    """scikit-learn's compiled extension modules, mapped as its estimators' modules are imported."""
    return [path for path in mapped(server) if "/sklearn/" in path and ".so" in Path(path).name]


def repository_of(built: Path, root: Path, *models: str) -> Path:
    repository = root / "model_repository"
    for name in models:
        shutil.copytree(built / name, repository / name)
    return repository


def infer(server: RunningServer, model: str, body: Mapping[str, object]) -> None:
    answer = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text


def test_a_repository_without_torchscript_never_imports_torch(built_repository: Path, tmp_path: Path) -> None:
    """ONNX and scikit-learn models loaded and answering: torch is not in the process; scikit-learn,
    which the iris model needs, is (so the libraries of a runtime that loads are seen)."""
    repository = repository_of(built_repository, tmp_path, "mlp", "simple", "iris")
    with serve(repository, tmp_path / "server.log") as server:
        for model, body in (("mlp", MLP), ("simple", SIMPLE), ("iris", IRIS)):
            infer(server, model, body)
        assert sklearn_mapped(server)
        assert torch_mapped(server) == []


def test_runtimes_are_imported_when_their_first_model_loads(built_repository: Path, tmp_path: Path) -> None:
    """Only an ONNX model loaded: neither torch nor scikit-learn. Loading iris brings scikit-learn and
    still no torch; loading the TorchScript model brings torch, which is what the checks above would see."""
    repository = repository_of(built_repository, tmp_path, "mlp", "iris", "tiny_cnn")
    explicit = ("--model-control-mode", "explicit", "--load-model", "mlp")
    with serve(repository, tmp_path / "server.log", *explicit) as server:
        infer(server, "mlp", MLP)
        assert torch_mapped(server) == []
        assert sklearn_mapped(server) == []

        assert httpx.post(f"{server.url}/v2/repository/models/iris/load", timeout=60).status_code == 200
        assert sklearn_mapped(server)
        assert torch_mapped(server) == []

        assert httpx.post(f"{server.url}/v2/repository/models/tiny_cnn/load", timeout=60).status_code == 200
        assert torch_mapped(server)

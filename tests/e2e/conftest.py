"""Servers shared by the e2e tests: one per module over the example repository, in explicit mode."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import RunningServer, serve


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`modelserve serve` over a copy of the example repository, every model loaded, control allowed."""
    root = tmp_path_factory.mktemp("e2e")
    repository = root / "model_repository"
    shutil.copytree(built_repository, repository)
    with serve(repository, root / "server.log", "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


@pytest.fixture(scope="module")
def running(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server over a copy of the examples, in explicit mode, with mlp and simple loaded (iris is not):
    what the scripts' tests run the runbooks' scripts against."""
    root = tmp_path_factory.mktemp("scripts")
    shutil.copytree(built_repository, root / "models")
    load = ["--load-model", "mlp", "--load-model", "simple"]
    with serve(root / "models", root / "server.log", "--model-control-mode", "explicit", *load) as server:
        yield server

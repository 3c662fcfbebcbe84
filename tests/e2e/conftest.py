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

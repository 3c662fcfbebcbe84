"""Poll mode against a real server: a version or a model that appears in the repository is served at
the next poll, one that disappears stops being served, and load/unload requests are refused."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.server import serve


def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_the_repository_is_read_again_at_each_poll(built_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(built_repository / "simple", repository / "simple")
    (repository / "simple" / "config.yaml").write_text(
        (repository / "simple" / "config.yaml").read_text() + "version_policy: all\n"
    )
    options = ["--model-control-mode", "poll", "--repository-poll-secs", "0.2"]
    with serve(repository, tmp_path / "server.log", *options) as server:

        def ready(path: str) -> bool:
            return httpx.get(f"{server.url}{path}/ready").status_code == 200

        assert ready("/v2/models/simple/versions/1")
        shutil.copytree(repository / "simple" / "1", repository / "simple" / "2")
        _until(lambda: ready("/v2/models/simple/versions/2"), "version 2 served")
        shutil.copytree(built_repository / "mlp", repository / "mlp")
        _until(lambda: ready("/v2/models/mlp"), "the new model served")
        shutil.rmtree(repository / "mlp")
        _until(lambda: not ready("/v2/models/mlp"), "the removed model unloaded")
        refused = httpx.post(f"{server.url}/v2/repository/models/simple/unload")

    assert refused.status_code == 400

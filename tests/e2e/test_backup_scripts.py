"""The scripts that move a deployment's data: `backup-model-serving.sh` / `restore-model-serving.sh DATE`
round trips, as the runbooks run them, through a real SQLite history, PostgreSQL and S3 (moto), and the
Kubernetes objects as a cluster lists them; and `preload-models.sh` mirroring an S3 repository before
the server starts, as an init container does. Every script call is bounded by a timeout."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import s3fs
from sqlalchemy import func, select

from modelserve.db import open_engine
from modelserve.history.schema import TrafficBucket
from tests.deploy.manifests import render, validate
from tests.deploy.tools import aws_cli
from tests.e2e.scripts_support import MLP_BODY, ROOT, run, script
from tests.e2e.server import free_port, serve, stop
from tests.postgres import PostgresServer, client_environment
from tests.s3 import CREDENTIALS, running_s3


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, for as long as the module runs."""
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


def bucket_with(endpoint: str, built_repository: Path, bucket: str, models: tuple[str, ...]) -> s3fs.S3FileSystem:
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
    fs.mkdir(bucket)
    for name in models:
        fs.put(str(built_repository / name), f"{bucket}/repo/{name}", recursive=True)
    return fs


def test_preload_mirrors_an_s3_repository_before_the_server_starts(
    s3_endpoint: str, built_repository: Path, tmp_path: Path
) -> None:
    bucket_with(s3_endpoint, built_repository, "preload", ("mlp", "simple"))
    store = {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": s3_endpoint, "MODEL_REPOSITORY": "s3://preload/repo"}
    cache = tmp_path / "cache"
    no_server = f"http://127.0.0.1:{free_port()}"  # an init container: the server has not started
    result = run(
        [sys.executable, "scripts/preload-models.sh"],
        MODELSERVE_URL=no_server,
        LOAD_MODELS="mlp",
        MODEL_CACHE_DIR=str(cache),
        **store,
    )
    assert result.returncode == 0, result.stderr
    assert "preloading into the model cache" in result.stdout
    mirrored = sorted(cache.glob("*/*/1/model.onnx"))
    assert [path.parent.parent.name for path in mirrored] == ["mlp"]
    # The server finds mlp mirrored and verified already, and serves it.
    env = {**store, "MODEL_CACHE_DIR": str(cache)}
    with serve(
        "s3://preload/repo", tmp_path / "server.log", "--model-control-mode", "explicit", "--load-model", "mlp", env=env
    ) as server:
        assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=MLP_BODY).status_code == 200
    missing = run(
        [sys.executable, "scripts/preload-models.sh", "mlp", "resnet50"],
        MODELSERVE_URL=no_server,
        MODEL_CACHE_DIR=str(cache),
        **store,
    )
    assert missing.returncode == 1
    assert "model 'resnet50': " in missing.stderr
    assert "preload-models.sh: a model could not be preloaded" in missing.stderr


def no_cluster(tmp_path: Path) -> dict[str, str]:
    """A kubeconfig whose cluster does not answer: kubectl is there, a cluster is not."""
    config = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{free_port()}"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        f"clusters: [{{name: gone, cluster: {{server: '{server}'}}}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: nobody}}]\nusers: [{name: nobody, user: {}}]\n"
    )
    return {"KUBECONFIG": str(config)}


def history_requests(database_url: str) -> int:
    engine = open_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.sum(TrafficBucket.__table__.c.requests))).scalar() or 0)
    finally:
        engine.dispose()


def serve_and_infer(repository: Path, root: Path, requests: int, env: dict[str, str]) -> None:
    """A server that answers ``requests`` inferences on mlp, stopped, so its history is written."""
    with serve(repository, root / "server.log", "--history-flush-interval-sec", "3600", env=env) as server:
        for _ in range(requests):
            assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=MLP_BODY).status_code == 200
        stop(server.process, 30)
        assert server.process.returncode == 0, server.output()


def today() -> str:
    return time.strftime("%Y%m%d")


def test_backup_and_restore_a_repository_and_its_sqlite_history(built_repository: Path, tmp_path: Path) -> None:
    repository, cache = tmp_path / "models", tmp_path / "cache"
    shutil.copytree(built_repository, repository)
    serve_and_infer(repository, tmp_path, 7, {"MODEL_CACHE_DIR": str(cache)})
    prometheus = tmp_path / "prometheus"
    (prometheus / "wal").mkdir(parents=True)
    (prometheus / "wal" / "00000001").write_bytes(b"samples")
    backups = tmp_path / "backups"
    backed = script(
        "backup-model-serving.sh",
        BACKUP_ROOT=str(backups),
        MODEL_REPOSITORY=str(repository),
        MODEL_CACHE_DIR=str(cache),
        PROMETHEUS_DATA_DIR=str(prometheus),
        **no_cluster(tmp_path),
    )
    assert backed.returncode == 0, backed.stderr
    folder = backups / today()
    assert f"Backup completed: {folder}" in backed.stdout
    assert "kubernetes: skipped, kubectl reaches no cluster" in backed.stdout
    assert sorted(p.name for p in folder.iterdir()) == [
        "history.sqlite3",
        "models",
        "prometheus-data.tar.gz",
        "sources.env",
    ]
    assert (folder / "models" / "mlp" / "1" / "model.onnx").read_bytes() == (
        repository / "mlp" / "1" / "model.onnx"
    ).read_bytes()
    assert oct(folder.stat().st_mode & 0o777) == "0o700", "it holds Secrets when a cluster answers"
    assert history_requests(f"sqlite:///{folder / 'history.sqlite3'}") == 7

    # Into fresh folders, then a server on them: the models load and the history goes on from 7.
    fresh = tmp_path / "fresh"
    restored = script(
        "restore-model-serving.sh",
        today(),
        BACKUP_ROOT=str(backups),
        MODEL_REPOSITORY=str(fresh / "models"),
        MODEL_CACHE_DIR=str(fresh / "cache"),
        **no_cluster(tmp_path),
    )
    assert restored.returncode == 0, restored.stderr
    assert "prometheus: not restored" in restored.stdout
    assert sorted(p.name for p in (fresh / "models").iterdir()) == sorted(p.name for p in repository.iterdir())
    serve_and_infer(fresh / "models", fresh, 2, {"MODEL_CACHE_DIR": str(fresh / "cache")})
    assert history_requests(f"sqlite:///{fresh / 'cache' / 'history.sqlite3'}") == 9


def test_restore_puts_back_where_the_backup_came_from(built_repository: Path, tmp_path: Path) -> None:
    repository, cache = tmp_path / "models", tmp_path / "cache"
    shutil.copytree(built_repository, repository)
    flushing = {"MODEL_CACHE_DIR": str(cache)}
    with serve(repository, tmp_path / "server.log", "--history-flush-interval-sec", "0.2", env=flushing) as server:
        for _ in range(4):
            assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=MLP_BODY).status_code == 200
        database = f"sqlite:///{cache / 'history.sqlite3'}"
        deadline = time.monotonic() + 30
        while history_requests(database) < 4:
            assert time.monotonic() < deadline, "the server never wrote its history"
            time.sleep(0.1)
        # Backed up while the server runs and writes: SQLite's online backup is consistent.
        folder = tmp_path / "backup"
        backed = script(
            "backup-model-serving.sh",
            BACKUP_DIR=str(folder),
            MODEL_REPOSITORY=str(repository),
            MODEL_CACHE_DIR=str(cache),
            PROMETHEUS_DATA_DIR=str(tmp_path / "none"),
            KUBECTL="kubectl-not-installed",
        )
        assert backed.returncode == 0, backed.stderr
        assert "kubernetes: skipped, kubectl-not-installed is not installed" in backed.stdout
    # Lost: the history and a model. The restore, with none of the variables set, puts both back.
    for path in cache.glob("history.sqlite3*"):
        path.unlink()
    shutil.rmtree(repository / "mlp")
    restored = script("restore-model-serving.sh", str(folder))
    assert restored.returncode == 0, restored.stderr
    assert (repository / "mlp" / "1" / "model.onnx").is_file()
    assert history_requests(database) == 4


def test_a_backup_that_fails_says_what_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    result = script(
        "backup-model-serving.sh",
        BACKUP_DIR=str(folder),
        MODEL_REPOSITORY=str(tmp_path / "missing"),
        KUBECTL="kubectl-not-installed",
    )
    assert result.returncode == 1
    assert f"models: {tmp_path / 'missing'} is not a folder" in result.stderr
    assert "backup-model-serving.sh: failed while copying the model repository" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_restore_of_a_date_without_a_backup_lists_the_dates_there_are(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    (backups / "20240115").mkdir(parents=True)
    # Run as the runbook does, from /opt/scripts, here a link to the checkout's script.
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "restore-model-serving.sh").symlink_to(ROOT / "scripts" / "restore-model-serving.sh")
    result = run([str(tmp_path / "opt" / "restore-model-serving.sh"), "20240116"], BACKUP_ROOT=str(backups))
    assert result.returncode == 1
    assert f"no backup at {backups / '20240116'} (backups in {backups}: 20240115)" in result.stderr


@pytest.mark.parametrize("tool", ["aws", "fsspec"])
def test_backup_and_restore_an_s3_repository(
    tool: str, s3_endpoint: str, built_repository: Path, tmp_path: Path
) -> None:
    bucket = f"restore-{tool}"
    fs = bucket_with(s3_endpoint, built_repository, bucket, ("mlp", "simple"))
    env = {
        **CREDENTIALS,
        "FSSPEC_S3_ENDPOINT_URL": s3_endpoint,
        "MODEL_REPOSITORY": f"s3://{bucket}/repo",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "KUBECTL": "kubectl-not-installed",
    }
    if tool == "fsspec":  # no AWS CLI on this PATH
        env["PATH"] = f"{ROOT / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    else:  # the AWS CLI `make tools` installs, before any other
        env["PATH"] = f"{aws_cli(tmp_path / 'bin')}:{os.environ['PATH']}"
    folder = tmp_path / "backup"
    backed = script("backup-model-serving.sh", BACKUP_DIR=str(folder), **env)
    assert backed.returncode == 0, backed.stderr
    assert ("with the AWS CLI" if tool == "aws" else "with fsspec") in backed.stdout
    assert "history: skipped, there is no SQLite database" in backed.stdout
    assert (folder / "models" / "simple" / "config.yaml").read_bytes() == fs.cat_file(
        f"{bucket}/repo/simple/config.yaml"
    )
    fs.rm(f"{bucket}/repo/mlp", recursive=True)
    restored = script("restore-model-serving.sh", str(folder), **env)
    assert restored.returncode == 0, restored.stderr
    fs.invalidate_cache()
    assert (
        fs.cat_file(f"{bucket}/repo/mlp/1/model.onnx") == (built_repository / "mlp" / "1" / "model.onnx").read_bytes()
    )


def test_backup_and_restore_a_postgresql_history(
    built_repository: Path, tmp_path: Path, postgres: PostgresServer
) -> None:
    client = client_environment()  # pg_dump and pg_restore, as `make tools` unpacks them
    source, target = postgres.create_database(), postgres.create_database()
    try:
        serve_and_infer(built_repository, tmp_path, 5, {"DATABASE_URL": postgres.url(source)})
        folder = tmp_path / "backup"
        common = {"MODEL_REPOSITORY": str(built_repository), "KUBECTL": "kubectl-not-installed"}
        backed = script(
            "backup-model-serving.sh", BACKUP_DIR=str(folder), DATABASE_URL=postgres.url(source), **common, **client
        )
        assert backed.returncode == 0, backed.stderr
        assert (folder / "history.pgdump").is_file()
        assert "postgres@" not in (folder / "sources.env").read_text(), "no credentials in the record"
        restored = script(
            "restore-model-serving.sh",
            str(folder),
            DATABASE_URL=postgres.url(target),
            MODEL_REPOSITORY=str(tmp_path / "models"),
            **client,
        )
        assert restored.returncode == 0, restored.stderr
        assert "(pg_restore)" in restored.stdout
        assert history_requests(postgres.url(target)) == 5
        # Restored again over itself: --clean replaces, it does not add.
        assert (
            script(
                "restore-model-serving.sh",
                str(folder),
                DATABASE_URL=postgres.url(target),
                MODEL_REPOSITORY=str(tmp_path / "models"),
                **client,
            ).returncode
            == 0
        )
        assert history_requests(postgres.url(target)) == 5
    finally:
        postgres.drop_database(source)
        postgres.drop_database(target)


def as_the_cluster_lists(document: dict[str, Any], number: int) -> dict[str, Any]:
    """``document`` with what the API server adds to what it stores."""
    stored = copy.deepcopy(document)
    stored["metadata"].update(
        {
            "uid": f"uid-{number}",
            "resourceVersion": str(1000 + number),
            "generation": 2,
            "creationTimestamp": "2024-01-15T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
        }
    )
    stored["status"] = {}
    if stored["kind"] == "Service":
        stored["spec"].update({"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"]})
    return stored


def test_restore_applies_the_objects_as_deployed_and_not_what_the_cluster_made(tmp_path: Path) -> None:
    deployed = render("base")
    listed = [as_the_cluster_lists(document, n) for n, document in enumerate(deployed)]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "model-serving-7d4-x",
            "namespace": "model-serving",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "model-serving-7d4"}],
        },
    }
    root_ca = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}, "data": {}}
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "default-token"},
    }
    saved = tmp_path / "all.json"
    saved.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [*listed, pod, root_ca, token]}))
    result = run([sys.executable, "scripts/lib/backup.py", "kube", str(saved)])
    assert result.returncode == 0, result.stderr
    applied = json.loads(result.stdout)
    assert applied["kind"] == "List"
    assert applied["items"] == deployed
    for document in applied["items"]:
        validate(document)

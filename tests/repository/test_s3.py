"""A repository on S3 (moto's server mode, reached through s3fs as in production): keys that would
escape the mirror, and SHA256SUMS that must list every file."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import pytest

from modelserve.errors import ModelLoadError
from modelserve.repository.remote import MANIFEST, MirroredRepository
from tests.builders import scale_onnx
from tests.s3 import running_s3

BUCKET = "models"
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        boto3.client("s3", endpoint_url=url, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        yield url


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def configure_s3(monkeypatch: pytest.MonkeyPatch, endpoint: str, **config_kwargs: Any) -> None:
    """Point s3fs at ``endpoint`` the way an operator does, through fsspec's configuration
    (``FSSPEC_S3='{"endpoint_url": ..., "config_kwargs": {...}}'`` in the environment)."""
    options: dict[str, Any] = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    if config_kwargs:
        options["config_kwargs"] = config_kwargs
    monkeypatch.setitem(fsspec.config.conf, "s3", options)


class Store:
    """One repository prefix of the bucket, written object by object with boto3, so keys arrive
    exactly as given (S3 takes ``..`` and empty components in a key as plain characters)."""

    def __init__(self, endpoint: str) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        self.prefix = f"repo{next(_prefixes)}"
        self.url = f"s3://{BUCKET}/{self.prefix}"

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}", Body=body)

    def put_model(self, name: str, tmp_path: Path) -> bytes:
        """A one-version ONNX model; returns the model file's bytes."""
        path = scale_onnx(tmp_path / f"{name}.onnx", factor=2.0)
        self.put(f"{name}/1/model.onnx", path.read_bytes())
        return path.read_bytes()


@pytest.fixture
def store(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    configure_s3(monkeypatch, endpoint, connect_timeout=5, read_timeout=5)
    return Store(endpoint)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- keys that would place a file outside the model's folder ------------------------------------------


@pytest.mark.parametrize(
    ("key", "landing"),
    [
        # leaves MODEL_CACHE_DIR altogether: from cache/<mirror>/m/1, four levels up is the test's folder
        ("m/1/../../../../evil.txt", lambda tmp_path, mirror: tmp_path / "evil.txt"),
        # stays inside MODEL_CACHE_DIR but lands in another model's mirror: seen only once normalised
        ("m/1/../../other/1/model.onnx", lambda tmp_path, mirror: mirror / "other" / "1" / "model.onnx"),
        # an absolute path below the model folder
        ("m//tmp/evil.txt", None),
        # '.' names the same local file as another key
        ("m/./1/model.onnx", None),
    ],
    ids=["out-of-the-cache", "into-another-model", "absolute", "dot"],
)
def test_a_key_that_leaves_the_model_folder_is_refused_before_anything_is_written(
    store: Store, tmp_path: Path, key: str, landing: Callable[[Path, Path], Path] | None
) -> None:
    store.put_model("m", tmp_path)
    store.put(key, b"not a model file")
    repository = MirroredRepository(store.url, tmp_path / "cache")
    repository.check()

    with pytest.raises(ModelLoadError) as caught:
        repository.source("m")

    message = caught.value.message
    assert f"{BUCKET}/{store.prefix}/{key}" in message, "the error names the key as stored"
    assert "refused" in message
    assert not (repository.root / "m").exists(), "nothing of the model is written"
    if landing is not None:
        assert not landing(tmp_path, repository.root).exists()


def test_a_copy_outside_the_folder_named_by_an_old_manifest_is_never_removed(store: Store, tmp_path: Path) -> None:
    """A mirror written before keys were checked may list a path outside its folder; when the key
    leaves the store, the mirror removes what its manifest lists, and must not reach outside."""
    store.put_model("m", tmp_path)
    repository = MirroredRepository(store.url, tmp_path / "cache")
    repository.source("m")
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    manifest_path = repository.root / "m" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["1/../../../../victim.txt"] = {"sha256": sha256(b"x"), "stamp": "old"}
    manifest_path.write_text(json.dumps(manifest))

    assert repository.source("m").files[1].is_file()
    assert victim.read_text() == "someone else's file"


def test_folder_markers_are_not_files(store: Store, tmp_path: Path) -> None:
    """Consoles and some tools create empty `folder/` objects; they are folders, not files to copy."""
    model = store.put_model("m", tmp_path)
    store.put("m/", b"")
    store.put("m/1/", b"")
    repository = MirroredRepository(store.url, tmp_path / "cache")

    assert repository.source("m").files[1].read_bytes() == model


# -- SHA256SUMS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("unlisted", ["config.yaml", "2/model.onnx"])
def test_a_file_missing_from_published_checksums_is_refused(store: Store, tmp_path: Path, unlisted: str) -> None:
    model = store.put_model("m", tmp_path)
    extra = b"max_batch_size: 0\n" if unlisted == "config.yaml" else scale_onnx(tmp_path / "v2.onnx").read_bytes()
    store.put(f"m/{unlisted}", extra)
    store.put("m/SHA256SUMS", f"{sha256(model)}  1/model.onnx\n".encode())
    repository = MirroredRepository(store.url, tmp_path / "cache")

    with pytest.raises(ModelLoadError) as caught:
        repository.source("m")

    assert f"{unlisted} is not in SHA256SUMS" in caught.value.message
    assert not (repository.root / "m" / unlisted).exists(), "a file that cannot be verified is not copied"

    store.put("m/SHA256SUMS", f"{sha256(model)}  1/model.onnx\n{sha256(extra)}  ./{unlisted}\n".encode())
    repository.source("m")
    assert (repository.root / "m" / unlisted).read_bytes() == extra

"""Mirroring a remote repository into MODEL_CACHE_DIR, through fsspec's real file:// back-end."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from modelserve.errors import ModelLoadError, ModelNotFound
from modelserve.repository.layout import ModelRepository
from modelserve.repository.remote import MANIFEST, MirroredRepository, open_repository
from tests.builders import scale_onnx


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A 'remote' repository: two models, one of them with two versions."""
    root = tmp_path / "bucket" / "models"
    scale_onnx(root / "double" / "1" / "model.onnx", factor=2.0)
    scale_onnx(root / "triple" / "1" / "model.onnx", factor=3.0)
    scale_onnx(root / "triple" / "2" / "model.onnx", factor=3.5)
    return root


@pytest.fixture
def mirrored(store: Path, tmp_path: Path) -> MirroredRepository:
    repository = MirroredRepository(f"file://{store}", tmp_path / "cache")
    repository.check()
    return repository


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_urls_are_mirrored_and_paths_are_served_in_place(tmp_path: Path, store: Path) -> None:
    assert isinstance(open_repository(f"file://{store}", tmp_path / "cache"), MirroredRepository)
    local = open_repository(str(store), tmp_path / "cache")
    assert type(local) is ModelRepository
    assert local.root == store


def test_names_come_from_the_store(mirrored: MirroredRepository) -> None:
    assert mirrored.names() == ["double", "triple"]
    assert mirrored.contains("triple")
    assert not mirrored.contains("quadruple")
    assert not mirrored.contains("../models")


def test_source_mirrors_the_model_and_records_its_hashes(mirrored: MirroredRepository, store: Path) -> None:
    source = mirrored.source("triple")
    assert source.files == {1: mirrored.root / "triple/1/model.onnx", 2: mirrored.root / "triple/2/model.onnx"}
    assert source.files[2].read_bytes() == (store / "triple/2/model.onnx").read_bytes()
    manifest = json.loads((mirrored.root / "triple" / MANIFEST).read_text())
    assert manifest["2/model.onnx"]["sha256"] == sha256(store / "triple/2/model.onnx")
    assert not (mirrored.root / "double").exists(), "only the model asked for is mirrored"


def test_an_unchanged_file_is_not_copied_again(mirrored: MirroredRepository) -> None:
    local = mirrored.source("double").files[1]
    first = local.stat().st_ino, local.stat().st_mtime_ns
    mirrored.source("double")
    assert (local.stat().st_ino, local.stat().st_mtime_ns) == first


def test_a_changed_file_is_copied_again(mirrored: MirroredRepository, store: Path) -> None:
    mirrored.source("double")
    scale_onnx(store / "double" / "1" / "model.onnx", factor=5.0, features=4)
    local = mirrored.source("double").files[1]
    assert local.read_bytes() == (store / "double/1/model.onnx").read_bytes()


def test_a_corrupted_cache_file_is_fetched_again(mirrored: MirroredRepository, store: Path) -> None:
    local = mirrored.source("double").files[1]
    local.write_bytes(b"flipped bits")
    assert mirrored.source("double").files[1].read_bytes() == (store / "double/1/model.onnx").read_bytes()


def test_new_and_removed_versions_follow_the_store(mirrored: MirroredRepository, store: Path) -> None:
    mirrored.source("triple")
    shutil.rmtree(store / "triple" / "1")
    scale_onnx(store / "triple" / "3" / "model.onnx", factor=4.0)
    source = mirrored.source("triple")
    assert sorted(source.files) == [2, 3]
    assert not (mirrored.root / "triple" / "1").exists()


def test_published_checksums_are_enforced(mirrored: MirroredRepository, store: Path) -> None:
    model = store / "double" / "1" / "model.onnx"
    (store / "double" / "SHA256SUMS").write_text(f"{sha256(model)}  1/model.onnx\n")
    assert mirrored.source("double").files[1].is_file()
    (store / "double" / "SHA256SUMS").write_text(f"{'0' * 64}  1/model.onnx\n")
    mirrored.root.joinpath("double", MANIFEST).unlink()  # force a fresh copy of the file
    with pytest.raises(ModelLoadError) as caught:
        mirrored.source("double")
    message = caught.value.message
    assert "double/1/model.onnx" in message
    assert "differs from SHA256SUMS" in message
    assert not (mirrored.root / "double" / "1" / "model.onnx").exists(), "a file that failed its check is removed"


def test_unknown_model_and_missing_store(mirrored: MirroredRepository, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="quadruple"):
        mirrored.source("quadruple")
    missing = MirroredRepository(f"file://{tmp_path}/nowhere", tmp_path / "cache")
    with pytest.raises(ModelLoadError, match="nowhere does not exist"):
        missing.check()


def test_each_url_has_its_own_mirror(store: Path, tmp_path: Path) -> None:
    a = MirroredRepository(f"file://{store}", tmp_path / "cache")
    b = MirroredRepository(f"file://{store}/", tmp_path / "cache")
    c = MirroredRepository(f"file://{store.parent}", tmp_path / "cache")
    assert a.root == b.root
    assert a.root != c.root
    assert a.root.parent == tmp_path / "cache"

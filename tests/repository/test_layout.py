"""Reading a Triton-style model repository: models, versions, platform and model file of each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelserve.errors import ModelLoadError, ModelNotFound, StoreUnavailable
from modelserve.repository.config import Platform, VersionPolicy
from modelserve.repository.layout import ModelRepository
from tests.builders import scale_onnx, write_config

ALL_FILENAMES = ("model.onnx", "model.pt", "model.joblib", "model.plan", "model.trt")


def _touch(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_example_repository_names(built_repository: Path) -> None:
    assert ModelRepository(built_repository).names() == ["iris", "mlp", "simple", "tiny_cnn"]


def test_names_skip_hidden_folders_and_files_that_are_no_model(tmp_path: Path) -> None:
    for folder in ("b_model", "a-model", "m.v2", ".git", ".ipynb_checkpoints", "__pycache__", "_private"):
        (tmp_path / folder).mkdir()
    _touch(tmp_path / "README.md")
    _touch(tmp_path / "history.sqlite3")
    _touch(tmp_path / ".hidden.onnx")
    assert ModelRepository(tmp_path).names() == ["a-model", "b_model", "m.v2"]


def test_a_file_at_the_root_is_a_model_named_by_its_stem_version_1(tmp_path: Path) -> None:
    """As the runbooks deploy a model: `kubectl cp resnet50-fp16.trt pod:/models/`."""
    for name in ("resnet50-fp16.trt", "model-v1.0.0.pth", "iris.joblib", "scale.onnx", "both.onnx"):
        _touch(tmp_path / name)
    _touch(tmp_path / "both" / "2" / "model.onnx")  # a folder of the same name wins
    repository = ModelRepository(tmp_path)

    assert repository.names() == ["both", "iris", "model-v1.0.0", "resnet50-fp16", "scale"]
    trt = repository.source("resnet50-fp16")
    assert (trt.platform, trt.files, trt.loose) == (Platform.TENSORRT, {1: tmp_path / "resnet50-fp16.trt"}, True)
    assert repository.source("model-v1.0.0").platform is Platform.TORCHSCRIPT
    assert repository.source("iris").platform is Platform.SKLEARN
    assert repository.source("both").files == {2: tmp_path / "both" / "2" / "model.onnx"}
    assert repository.contains("scale")
    assert not repository.contains("resnet50")
    with pytest.raises(ModelNotFound):
        repository.source("missing")


def test_names_of_an_empty_repository(tmp_path: Path) -> None:
    assert ModelRepository(tmp_path).names() == []


def test_a_name_longer_than_a_file_name_is_no_model(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    name = "m" * 300  # the file system refuses to look such a name up at all

    assert not repository.contains(name)
    with pytest.raises(ModelNotFound, match="m" * 300):
        repository.source(name)


def test_names_see_models_added_at_runtime(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    assert repository.names() == []
    (tmp_path / "late").mkdir()
    assert repository.names() == ["late"]


@pytest.mark.parametrize(
    ("name", "platform", "filename"),
    [
        ("mlp", Platform.ONNX, "model.onnx"),
        ("simple", Platform.ONNX, "model.onnx"),
        ("tiny_cnn", Platform.TORCHSCRIPT, "model.pt"),
        ("iris", Platform.SKLEARN, "model.joblib"),
    ],
)
def test_example_sources(built_repository: Path, name: str, platform: Platform, filename: str) -> None:
    source = ModelRepository(built_repository).source(name)
    assert source.name == name
    assert source.directory == built_repository / name
    assert source.platform is platform
    assert source.files == {1: built_repository / name / "1" / filename}
    assert source.selected_versions() == [1]


def test_config_is_read_when_present(built_repository: Path) -> None:
    repository = ModelRepository(built_repository)
    assert repository.source("simple").config.max_batch_size == 8
    assert [t.name for t in repository.source("simple").config.inputs] == ["INPUT0", "INPUT1"]
    assert repository.source("mlp").config.inputs == []


@pytest.mark.parametrize(
    ("filename", "platform"),
    [
        ("model.onnx", Platform.ONNX),
        ("model.pt", Platform.TORCHSCRIPT),
        ("model.joblib", Platform.SKLEARN),
        ("model.plan", Platform.TENSORRT),
        ("model.trt", Platform.TENSORRT),
    ],
)
def test_platform_is_detected_from_the_file(tmp_path: Path, filename: str, platform: Platform) -> None:
    file = _touch(tmp_path / "m" / "1" / filename)
    source = ModelRepository(tmp_path).source("m")
    assert source.platform is platform
    assert source.files == {1: file}


def test_plan_is_preferred_over_trt(tmp_path: Path) -> None:
    plan = _touch(tmp_path / "m" / "1" / "model.plan")
    _touch(tmp_path / "m" / "1" / "model.trt")
    assert ModelRepository(tmp_path).source("m").files == {1: plan}


def test_platform_is_detected_from_the_latest_version(tmp_path: Path) -> None:
    _touch(tmp_path / "m" / "1" / "model.pt")
    scale_onnx(tmp_path / "m" / "2" / "model.onnx")
    source = ModelRepository(tmp_path).source("m")
    assert source.platform is Platform.ONNX
    assert source.files[2] == tmp_path / "m" / "2" / "model.onnx"


def test_config_platform_wins_over_detection(tmp_path: Path) -> None:
    write_config(tmp_path / "m", "platform: torchscript\n")
    _touch(tmp_path / "m" / "1" / "model.onnx")
    source = ModelRepository(tmp_path).source("m")
    assert source.platform is Platform.TORCHSCRIPT
    assert source.files == {1: tmp_path / "m" / "1" / "model.pt"}


def test_versions_ignore_non_numeric_and_zero_folders(tmp_path: Path) -> None:
    for version in ("1", "3", "10"):
        scale_onnx(tmp_path / "m" / version / "model.onnx")
    for folder in ("0", "00", "latest", "v2", "-1", "2.5", ".5"):
        _touch(tmp_path / "m" / folder / "model.onnx")
    _touch(tmp_path / "m" / "7")  # a file named like a version is not a version folder
    source = ModelRepository(tmp_path).source("m")
    assert sorted(source.files) == [1, 3, 10]
    assert source.files == {v: tmp_path / "m" / str(v) / "model.onnx" for v in (1, 3, 10)}
    assert source.selected_versions() == [10]


def test_each_version_gets_its_own_file(tmp_path: Path) -> None:
    write_config(tmp_path / "m", "version_policy: all\n")
    for version in (1, 2):
        scale_onnx(tmp_path / "m" / str(version) / "model.onnx", factor=float(version))
    source = ModelRepository(tmp_path).source("m")
    assert source.files == {1: tmp_path / "m" / "1" / "model.onnx", 2: tmp_path / "m" / "2" / "model.onnx"}
    assert source.selected_versions() == [1, 2]


def test_a_version_missing_its_file_still_points_where_it_should_be(tmp_path: Path) -> None:
    """The runtime then fails that one version with 'model file not found' naming this path."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    scale_onnx(tmp_path / "m" / "2" / "model.onnx")
    source = ModelRepository(tmp_path).source("m")
    assert source.files[1] == tmp_path / "m" / "1" / "model.onnx"
    assert not source.files[1].exists()


def test_version_policy_selects_versions(tmp_path: Path) -> None:
    write_config(tmp_path / "m", "version_policy: {specific: {versions: [1, 3, 4]}}\n")
    for version in (1, 2, 3):
        scale_onnx(tmp_path / "m" / str(version) / "model.onnx")
    source = ModelRepository(tmp_path).source("m")
    assert source.config.version_policy == VersionPolicy(specific=[1, 3, 4])
    assert source.selected_versions() == [1, 3]


@pytest.mark.parametrize("name", ["absent", ".git", "../escape", "a/b", "", "README.md"])
def test_missing_model_is_not_found(tmp_path: Path, name: str) -> None:
    root = tmp_path / "repository"
    (root / ".git" / "1").mkdir(parents=True)
    _touch(root / "README.md")
    (root / "a" / "b" / "1").mkdir(parents=True)
    scale_onnx(tmp_path / "escape" / "1" / "model.onnx")  # a model outside the repository
    with pytest.raises(ModelNotFound) as caught:
        ModelRepository(root).source(name)
    assert (
        str(caught.value)
        == f"Request for unknown model: '{name}' is not found; it is not in the model repository {root}"
    )


def test_no_version_folders_names_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    _touch(folder / "model.onnx")  # beside the version folders instead of in one
    (folder / "0").mkdir()
    with pytest.raises(ModelLoadError) as caught:
        ModelRepository(tmp_path).source("m")
    message = str(caught.value)
    assert message.startswith(f"{folder}: no version folders")
    assert f"{folder}/1/" in message


def test_no_model_file_lists_the_expected_names(tmp_path: Path) -> None:
    _touch(tmp_path / "m" / "1" / "model.pb")
    with pytest.raises(ModelLoadError) as caught:
        ModelRepository(tmp_path).source("m")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'm' / '1'}: no model file found")
    for filename in ALL_FILENAMES:
        assert filename in message


def test_config_name_differing_from_the_folder(tmp_path: Path) -> None:
    config = write_config(tmp_path / "resnet", "name: resnet50\n")
    scale_onnx(tmp_path / "resnet" / "1" / "model.onnx")
    with pytest.raises(ModelLoadError) as caught:
        ModelRepository(tmp_path).source("resnet")
    message = str(caught.value)
    assert message.startswith(f"{config}: ")
    assert "'resnet50'" in message
    assert "'resnet'" in message


def test_config_name_equal_to_the_folder(tmp_path: Path) -> None:
    write_config(tmp_path / "resnet", "name: resnet\n")
    scale_onnx(tmp_path / "resnet" / "1" / "model.onnx")
    assert ModelRepository(tmp_path).source("resnet").config.name == "resnet"


def test_bad_config_names_its_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m", "max_batch_sise: 4\n")
    scale_onnx(tmp_path / "m" / "1" / "model.onnx")
    with pytest.raises(ModelLoadError) as caught:
        ModelRepository(tmp_path).source("m")
    assert str(caught.value) == f"{config}: max_batch_sise: unknown field"


def test_check_on_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError) as caught:
        ModelRepository(root).check()
    assert str(root) in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_check_on_a_file_root(tmp_path: Path) -> None:
    root = _touch(tmp_path / "models.tar")
    with pytest.raises(ModelLoadError, match="not a directory"):
        ModelRepository(root).check()


def test_check_on_an_existing_root(built_repository: Path) -> None:
    repository = ModelRepository(built_repository)
    repository.check()
    assert repository.root == built_repository


def test_a_repository_folder_that_is_gone_is_unavailable_not_empty(tmp_path: Path) -> None:
    """A network disk that is unmounted, or a volume that went away: the store is down, not the model absent."""
    root = tmp_path / "mounted"
    scale_onnx(root / "double" / "1" / "model.onnx", factor=2.0)
    repository = ModelRepository(root)
    repository.check()
    assert repository.contains("double")
    shutil.rmtree(root)

    for ask in (lambda: repository.contains("double"), repository.names, lambda: repository.source("double")):
        with pytest.raises(StoreUnavailable) as caught:
            ask()
        assert f"model repository {root} is unavailable" in caught.value.message
    with pytest.raises(ModelLoadError, match="does not exist"):
        repository.check()

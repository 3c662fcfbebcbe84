"""Reading a model repository laid out the way Triton lays it out, so migrating is a copy::

<repository>/<model>/config.yaml            optional
<repository>/<model>/<version>/model.onnx   or model.pt, model.joblib, model.plan/.trt

and, as the runbooks deploy a model, a single file at the repository's root
(``<repository>/resnet50-fp16.trt``): a model named by the file's stem, version 1, its platform by its
suffix. A folder of the same name wins over a loose file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelserve.errors import ModelLoadError, ModelNotFound, StoreUnavailable
from modelserve.repository.config import ModelConfig, Platform

# One folder name: at most 255 characters, the longest a file system takes (a longer name asked of
# the file system is an OSError, not a missing model).
VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
# A model as one file at the repository's root: its suffix says its platform.
LOOSE_SUFFIXES = {
    ".onnx": Platform.ONNX,
    ".pt": Platform.TORCHSCRIPT,
    ".pth": Platform.TORCHSCRIPT,
    ".joblib": Platform.SKLEARN,
    ".plan": Platform.TENSORRT,
    ".trt": Platform.TENSORRT,
}


def loose_model(filename: str) -> tuple[str, Platform] | None:
    """The model a file at the repository's root is (its name and platform), or None for any other file."""
    path = PurePosixPath(filename)
    platform = LOOSE_SUFFIXES.get(path.suffix.lower())
    if platform is None or not VALID_NAME.match(path.stem):
        return None
    return path.stem, platform


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model as found on disk: its config and the file each version folder should hold."""

    name: str
    directory: Path
    config: ModelConfig
    platform: Platform
    files: dict[int, Path]  # version -> the model file that version should load
    loose: bool = False  # one file at the repository's root, not a folder: ``files[1]`` is that file

    def selected_versions(self) -> list[int]:
        """The versions the version policy asks to serve."""
        return self.config.version_policy.select(list(self.files))


class ModelRepository:
    """A folder of models; re-read on every call so that models added at runtime can be loaded.

    A folder that cannot be read (a network disk that does not answer, a volume that went away)
    raises StoreUnavailable, a 503 to retry: the request was fine, and the model may well exist.
    """

    # What reading the store raises when the store, not the model, is at fault.
    store_errors: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        """The repository as the operator named it, for messages."""
        return str(self.root)

    @contextmanager
    def asking(self, doing: str) -> Iterator[None]:
        """Turn the store's failure to answer, while ``doing``, into StoreUnavailable naming the store."""
        try:
            yield
        except self.store_errors as exc:
            raise StoreUnavailable(
                f"model repository {self.location} is unavailable ({doing}): {type(exc).__name__}: {exc}"
            ) from exc

    def check(self) -> None:
        """Fail early, with the path, when the repository itself is missing."""
        with self.asking("opening the repository"):
            found = self.root.is_dir()
        if not found:
            raise ModelLoadError(f"model repository {self.location} does not exist or is not a directory")

    def names(self) -> list[str]:
        """Every model folder and model file, sorted; hidden folders and other files are not models."""
        with self.asking("listing its models"):
            found = set()
            for entry in self.root.iterdir():
                if entry.is_dir():
                    if VALID_NAME.match(entry.name):
                        found.add(entry.name)
                elif (model := loose_model(entry.name)) is not None:
                    found.add(model[0])
            return sorted(found)

    def _loose_file(self, name: str) -> Path | None:
        """The file at the root that is model ``name``, if any (the first by suffix where several are)."""
        return next((path for suffix in LOOSE_SUFFIXES if (path := self.root / f"{name}{suffix}").is_file()), None)

    def contains(self, name: str) -> bool:
        """Whether the repository has a model of this name, loaded or not. Blocks on the file system
        (call it off the event loop); raises StoreUnavailable when the repository cannot be read."""
        if not VALID_NAME.match(name):
            return False
        with self.asking(f"looking for model '{name}'"):
            found = (self.root / name).is_dir() or self._loose_file(name) is not None
            # A missing model is a 404; a missing repository (an unmounted disk) is the store's outage.
            present = found or self.root.is_dir()
        if not present:
            raise StoreUnavailable(
                f"model repository {self.location} is unavailable (looking for model '{name}'): its folder is gone"
            )
        return found

    def source(self, name: str) -> ModelSource:
        """Everything the repository says about one model, or a ModelLoadError naming what is wrong."""
        if not self.contains(name):
            raise ModelNotFound.unknown(name, detail=f"it is not in the model repository {self.location}")
        with self.asking(f"reading model '{name}'"):
            if not (self.root / name).is_dir() and (file := self._loose_file(name)) is not None:
                return loose_source(name, file)
            return read_source(name, self.root / name)


def loose_source(name: str, file: Path) -> ModelSource:
    """A model that is one file: version 1, no config.yaml (the file says the rest)."""
    platform = LOOSE_SUFFIXES[file.suffix.lower()]
    return ModelSource(name, file.parent, ModelConfig(platform=platform), platform, {1: file}, loose=True)


def read_source(name: str, directory: Path, config: ModelConfig | None = None) -> ModelSource:
    """One model folder's config, versions and model files, or a ModelLoadError naming what is wrong;
    with ``config``, that config instead of the folder's (a load request's, repository/overrides.py)."""
    config_path = directory / "config.yaml"
    if config is None and not config_path.exists() and (directory / "config.pbtxt").exists():
        from modelserve.repository.triton import read_pbtxt  # protobuf, only for repositories moved from Triton

        config_path = directory / "config.pbtxt"
        config = read_pbtxt(config_path)
    if config is None:
        config = ModelConfig.from_file(config_path) if config_path.exists() else ModelConfig()
    if config.name is not None and config.name != name:
        raise ModelLoadError(f"{config_path}: name '{config.name}' differs from its folder '{name}'; make them equal")
    versions = sorted(
        int(entry.name)
        for entry in directory.iterdir()
        if entry.is_dir() and entry.name.isdigit() and str(int(entry.name)) == entry.name and int(entry.name) > 0
    )
    if not versions and config.platform is Platform.ENSEMBLE:
        versions = [1]  # an ensemble has no file to put in a version folder: 1/ may be left out, as it may be empty
    if not versions:
        raise ModelLoadError(
            f"{directory}: no version folders; put the model in {directory}/1/"
            f"({' | '.join(f for p in Platform for f in p.filenames)})"
        )
    platform = config.platform or _detect_platform(directory / str(versions[-1]))
    files = {v: _model_file(directory / str(v), platform) for v in versions}
    return ModelSource(name=name, directory=directory, config=config, platform=platform, files=files)


def _detect_platform(version_dir: Path) -> Platform:
    for platform in Platform:
        if any((version_dir / filename).exists() for filename in platform.filenames):
            return platform
    expected = ", ".join(f for p in Platform for f in p.filenames)
    raise ModelLoadError(f"{version_dir}: no model file found; expected one of {expected}")


def _model_file(version_dir: Path, platform: Platform) -> Path:
    if not platform.filenames:  # an ensemble: the version folder stands for the file it has none of
        return version_dir
    for filename in platform.filenames:
        if (version_dir / filename).exists():
            return version_dir / filename
    return version_dir / platform.filenames[0]

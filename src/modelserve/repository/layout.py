"""Reading a model repository laid out the way Triton lays it out, so migrating is a copy::

<repository>/<model>/config.yaml            optional
<repository>/<model>/<version>/model.onnx   or model.pt, model.joblib, model.plan/.trt
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modelserve.errors import ModelLoadError, ModelNotFound
from modelserve.repository.config import ModelConfig, Platform

# One folder name: at most 255 characters, the longest a file system takes (a longer name asked of
# the file system is an OSError, not a missing model).
VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model as found on disk: its config and the file each version folder should hold."""

    name: str
    directory: Path
    config: ModelConfig
    platform: Platform
    files: dict[int, Path]  # version -> the model file that version should load

    def selected_versions(self) -> list[int]:
        """The versions the version policy asks to serve."""
        return self.config.version_policy.select(list(self.files))


class ModelRepository:
    """A folder of models; re-read on every call so that models added at runtime can be loaded."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def check(self) -> None:
        """Fail early, with the path, when the repository itself is missing."""
        if not self.root.is_dir():
            raise ModelLoadError(f"model repository {self.root} does not exist or is not a directory")

    def names(self) -> list[str]:
        """Every model folder, sorted; hidden folders and stray files are not models."""
        return sorted(entry.name for entry in self.root.iterdir() if entry.is_dir() and VALID_NAME.match(entry.name))

    def contains(self, name: str) -> bool:
        """Whether the repository has a model of this name, loaded or not."""
        return bool(VALID_NAME.match(name)) and (self.root / name).is_dir()

    def source(self, name: str) -> ModelSource:
        """Everything the repository says about one model, or a ModelLoadError naming what is wrong."""
        directory = self.root / name
        if not VALID_NAME.match(name) or not directory.is_dir():
            raise ModelNotFound.unknown(name, detail=f"it is not in the model repository {self.root}")
        config_path = directory / "config.yaml"
        config = ModelConfig.from_file(config_path) if config_path.exists() else ModelConfig()
        if config.name is not None and config.name != name:
            raise ModelLoadError(
                f"{config_path}: name '{config.name}' differs from its folder '{name}'; make them equal"
            )
        versions = sorted(
            int(entry.name)
            for entry in directory.iterdir()
            if entry.is_dir() and entry.name.isdigit() and str(int(entry.name)) == entry.name and int(entry.name) > 0
        )
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
    for filename in platform.filenames:
        if (version_dir / filename).exists():
            return version_dir / filename
    return version_dir / platform.filenames[0]

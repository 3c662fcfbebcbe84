"""What a load request puts in place of the repository's own model (Triton's repository extension): a
``config`` parameter, the model configuration as Triton's JSON (what ``GET .../config`` answers and
tritonclient's ``load_model(config=...)`` sends), and ``file:<version>/<name>`` parameters carrying the
model's files. They stay in force until the model is loaded again without them, as in Triton.

Triton's JSON is read into config.yaml's fields as a config.pbtxt is (repository/triton.py); a field
it reads that holds a wrong value refuses the load with 400, naming the field.

Files are written under ``MODEL_CACHE_DIR/.overrides/<model>/``: a path that is absolute, climbs out
with ``..`` or names no version folder is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from modelserve.errors import InvalidInput
from modelserve.repository.config import ModelConfig, explain
from modelserve.repository.layout import ModelSource, read_source
from modelserve.repository.triton import config_fields


def from_triton(model: str, text: str) -> ModelConfig:
    """A ``config`` load parameter as a ModelConfig, or InvalidInput saying what is wrong with it."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _failed(model, f"the config parameter is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _failed(model, "the config parameter must be a JSON object (Triton's model configuration)")
    try:
        return ModelConfig.model_validate(config_fields(document))
    except ValidationError as exc:
        raise _failed(model, f"the config parameter is not a valid model configuration: {explain(exc)}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise _failed(model, f"the config parameter is not a valid model configuration: {exc}") from None


def from_parameters(
    model: str, parameters: dict[str, Any], *, base64_files: bool
) -> tuple[ModelConfig | None, dict[str, bytes]]:
    """A load request's ``config`` and ``file:<path>`` parameters: its config and its files (base64 over
    HTTP's JSON, bytes over gRPC), or InvalidInput naming the parameter that is wrong."""
    config: ModelConfig | None = None
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        if key == "config":
            if not isinstance(value, str):
                raise _failed(model, "the config parameter must be a string holding Triton's JSON model configuration")
            config = from_triton(model, value)
        elif key.startswith("file:"):
            files[key.removeprefix("file:")] = _content(model, key, value, base64_files)
        else:
            raise _failed(model, f"unknown load parameter {key!r}; the parameters are config and file:<version>/<name>")
    return config, files


def _content(model: str, key: str, value: Any, base64_files: bool) -> bytes:
    if not base64_files:
        if not isinstance(value, bytes):
            raise _failed(model, f"parameter {key} must hold the file's bytes")
        return value
    if not isinstance(value, str):
        raise _failed(model, f"parameter {key} must hold the file's content in base64")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise _failed(model, f"parameter {key} is not base64: {exc}") from None


def _failed(model: str, why: str) -> InvalidInput:
    return InvalidInput(f"failed to load '{model}': {why}")


@dataclass
class Overrides:
    """The models served from a load request's parameters rather than from the repository as it is."""

    scratch: Path  # where models sent as files are written: MODEL_CACHE_DIR/overrides

    def __post_init__(self) -> None:
        self._sources: dict[str, ModelSource] = {}

    def get(self, name: str) -> ModelSource | None:
        """The source in force for ``name``, or None for the repository's own."""
        return self._sources.get(name)

    def names(self) -> list[str]:
        """The models in force, those sent as files included."""
        return sorted(self._sources)

    def apply(self, name: str, base: ModelSource | None, config: ModelConfig, files: dict[str, bytes]) -> None:
        """Serve ``name`` with ``config``, from ``files`` when given (else from ``base``, the repository's
        folder). Blocks on the file system: call it off the event loop."""
        if files:
            directory = self.scratch / name / uuid.uuid4().hex
            for relative, data in files.items():
                target = directory / _safe(name, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        elif base is not None and base.loose:  # one file at the repository's root: that file, with this config
            source = replace(base, config=config, platform=config.platform or base.platform)
            self.clear(name)
            self._sources[name] = source
            return
        elif base is not None:
            directory = base.directory
        else:
            raise _failed(name, "it is not in the repository; send its files as file:<version>/<name> parameters")
        source = read_source(name, directory, config)  # the config given, never the folder's config.yaml
        self.clear(name)
        self._sources[name] = source

    def clear(self, name: str) -> None:
        """Serve ``name`` from the repository again; files it was sent are deleted."""
        source = self._sources.pop(name, None)
        if source is not None and source.directory.is_relative_to(self.scratch):
            shutil.rmtree(source.directory, ignore_errors=True)


def _safe(model: str, relative: str) -> PurePosixPath:
    """A ``file:`` parameter's path, checked: inside a version folder of the model, never above it."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2 or not path.parts[0].isdigit():
        raise _failed(model, f"file:{relative} must be <version>/<name> in the model's folder, as file:1/model.onnx")
    return path

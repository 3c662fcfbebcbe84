"""The schema of ``<repo>/<model>/config.yaml``, close to Triton's model configuration.

Unknown fields are errors rather than ignored: a misspelt ``max_batch_sise`` silently falling back
to a default is the kind of surprise an operator finds at 3 a.m.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from modelserve.errors import ModelLoadError
from modelserve.repository.llm import LLMConfig
from modelserve.repository.scheduling import EnsembleScheduling, SequenceBatching
from modelserve.repository.strict import Strict
from modelserve.types import DATATYPE_TO_NUMPY


class Platform(StrEnum):
    """The backends a model can run on, and the file each expects in a version folder."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    SKLEARN = "sklearn"
    TENSORRT = "tensorrt"
    # Before llm, whose config.json a Python model's version folder may hold beside its model.py.
    PYTHON = "python"  # a Triton Python model: model.py defining TritonPythonModel (runtimes/python.py)
    LLM = "llm"  # a Hugging Face model folder (config.json, *.safetensors, tokenizer.json): generative/
    ENSEMBLE = "ensemble"  # steps through other models (ensemble_scheduling), no file of its own: models/ensemble.py

    @property
    def filenames(self) -> tuple[str, ...]:
        """The model file names this platform loads, in order of preference."""
        return _FILENAMES[self]


_FILENAMES = {
    Platform.ONNX: ("model.onnx",),
    Platform.TORCHSCRIPT: ("model.pt",),
    Platform.SKLEARN: ("model.joblib",),
    Platform.TENSORRT: ("model.plan", "model.trt"),
    Platform.PYTHON: ("model.py",),
    Platform.LLM: ("config.json",),
    Platform.ENSEMBLE: (),  # its version folder may be empty, or left out
}


class TensorConfig(Strict):
    """An input or output as config.yaml declares it; ``dims`` excludes the batch dimension."""

    name: str = Field(min_length=1)
    datatype: str
    dims: list[int]

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPE_TO_NUMPY:
            raise ValueError(f"unknown datatype {value!r}; expected one of {', '.join(DATATYPE_TO_NUMPY)}")
        return value

    @field_validator("dims")
    @classmethod
    def _valid_dims(cls, value: list[int]) -> list[int]:
        if any(d == 0 or d < -1 for d in value):
            raise ValueError(f"dims {value} must be positive sizes or -1 for any size")
        return value


class QueuePolicyConfig(Strict):
    """Triton's ModelQueuePolicy: what a priority level's queue holds, and what a request that waited
    too long gets (batching/priority.py)."""

    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    default_timeout_microseconds: int = Field(0, ge=0)
    allow_timeout_override: bool = False
    max_queue_size: int = Field(0, ge=0)


class DynamicBatching(Strict):
    """How long to wait for a batch to fill, and how many requests may wait at most."""

    max_queue_delay_ms: float | None = Field(None, ge=0, le=10_000)
    # adaptive: the delay is waited only while more requests can join (batching/delay.py); fixed: a batch
    # below its target always waits the whole delay, as Triton's does.
    queue_delay: Literal["adaptive", "fixed"] = "adaptive"
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_size: int | None = Field(None, ge=0)
    priority_levels: int = Field(0, ge=0, le=1000)  # 0: one queue, in arrival order
    default_priority_level: int = Field(0, ge=0)  # the level of a request that names none (0: the lowest)
    default_queue_policy: QueuePolicyConfig | None = None
    priority_queue_policy: dict[int, QueuePolicyConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _levels_exist(self) -> DynamicBatching:
        levels = self.priority_levels
        if self.default_priority_level > levels:
            raise ValueError(
                f"default_priority_level {self.default_priority_level} is not among priority_levels 1..{levels}"
            )
        if stray := sorted(level for level in self.priority_queue_policy if not 1 <= level <= levels):
            raise ValueError(f"priority_queue_policy names levels {stray} outside priority_levels 1..{levels}")
        return self

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("preferred_batch_sizes must be positive")
        return sorted(set(value))


class ResponseCache(Strict):
    """Triton's ``response_cache``: answers of this model kept in the server's cache (RESPONSE_CACHE_MB)."""

    enable: bool = False


class VersionPolicy(Strict):
    """Which versions to serve: the latest N, all, or a specific list (exactly one of them).

    Written ``{latest: 2}``, ``all``, ``{specific: [1, 3]}``, or in Triton's nested form
    (``{latest: {num_versions: 2}}``, ``{specific: {versions: [1, 3]}}``) so a migrated config works.
    """

    latest: int | None = Field(None, ge=1)
    all: bool = False
    specific: list[int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_triton_forms(cls, value: Any) -> Any:
        if value == "all":
            return {"all": True}
        if isinstance(value, dict):
            value = dict(value)
            if isinstance(value.get("latest"), dict):
                value["latest"] = value["latest"].get("num_versions", 1)
            if isinstance(value.get("specific"), dict):
                value["specific"] = value["specific"].get("versions", [])
            if value.get("all") == {}:
                value["all"] = True
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [self.latest is not None, self.all, self.specific is not None]
        if sum(chosen) != 1:
            raise ValueError("set exactly one of latest, all or specific")
        if self.specific is not None and (not self.specific or min(self.specific) < 1):
            raise ValueError("specific versions must be a non-empty list of positive integers")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to load out of those present, in ascending order."""
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in self.specific]
        assert self.latest is not None
        return ordered[-self.latest :]


class WarmupInputs(StrEnum):
    """Where warmup requests take their tensors from."""

    RANDOM = "random"
    ZERO = "zero"
    FILE = "file"


class Warmup(Strict):
    """Requests run through a freshly loaded model before it turns READY, so the first real request
    does not pay for lazy initialisation (memory arenas, kernel selection, JIT profiling runs).

    ``file`` is relative to the model's folder: an .npz keyed by input name, or an .npy for a model
    with one input, holding at least one sample; batches repeat its samples as needed.
    """

    count: int = Field(1, ge=1, le=1000)
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    inputs: WarmupInputs = WarmupInputs.RANDOM
    file: str | None = None

    @field_validator("batch_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("batch_sizes must be a non-empty list of positive sizes")
        return sorted(set(value))

    @model_validator(mode="after")
    def _file_when_asked(self) -> Warmup:
        if (self.inputs is WarmupInputs.FILE) != (self.file is not None):
            raise ValueError("inputs: file needs file: <path in the model folder>, and file needs inputs: file")
        if self.file is not None and not self.file.endswith((".npz", ".npy")):
            raise ValueError(f"file {self.file!r} must be an .npz (one array per input name) or an .npy")
        return self


class ModelConfig(Strict):
    """A model's config.yaml. Every field is optional: what is absent is read from the model file."""

    name: str | None = None
    platform: Platform | None = None
    backend: Literal["python"] | None = None  # Triton's spelling of platform python, as config.pbtxt writes it
    max_batch_size: int | None = Field(None, ge=0, le=65536)
    inputs: list[TensorConfig] = Field(default_factory=list)
    outputs: list[TensorConfig] = Field(default_factory=list)
    dynamic_batching: DynamicBatching | None = None
    response_cache: ResponseCache = Field(default_factory=ResponseCache)
    version_policy: VersionPolicy = Field(default_factory=lambda: VersionPolicy(latest=1))
    # Left out, an ONNX model on the CPU gets one per CPU instead (runtimes/onnx.py, instance_count).
    instance_count: int = Field(1, ge=1, le=64)
    pinned: bool = False  # never evicted to make room for another model (on-demand mode)
    parameters: dict[str, Any] = Field(default_factory=dict)
    warmup: Warmup | None = None
    llm: LLMConfig | None = None  # platform llm only
    ensemble_scheduling: EnsembleScheduling | None = None  # platform ensemble only, which needs it
    sequence_batching: SequenceBatching | None = None  # a stateful model's scheduler, instead of dynamic_batching

    @model_validator(mode="before")
    @classmethod
    def _backend_names_the_platform(cls, value: Any) -> Any:
        if not isinstance(value, dict) or value.get("backend") != "python":
            return value
        if value.get("platform") not in (None, "python"):
            raise ValueError(f"backend python and platform {value['platform']} disagree; set one of them")
        return value | {"platform": "python"}

    @model_validator(mode="after")
    def _steps_of_ensembles(self) -> ModelConfig:
        # An ensemble without steps is refused when it loads (models/ensemble.py), with its name.
        if self.ensemble_scheduling is not None and self.platform is not Platform.ENSEMBLE:
            raise ValueError("ensemble_scheduling is for platform ensemble; set platform: ensemble or remove it")
        if self.sequence_batching is not None and self.dynamic_batching is not None:
            raise ValueError("sequence_batching and dynamic_batching exclude each other; keep one")
        if self.sequence_batching is not None and self.warmup is not None:
            raise ValueError("warmup is not run for a model with sequence_batching: its requests need sequences")
        return self

    @field_validator("inputs", "outputs")
    @classmethod
    def _unique_names(cls, value: list[TensorConfig]) -> list[TensorConfig]:
        names = [t.name for t in value]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"tensor names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        """Parse and validate a config.yaml; errors name the file, the field and the problem."""
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ModelLoadError(f"{path}: invalid YAML: {exc}") from exc
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read: {exc.strerror}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelLoadError(f"{path}: {explain(exc)}") from exc


def explain(error: ValidationError) -> str:
    """A validation error as config.yaml's readers see it: each field's path and what is wrong there."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{where}: {message}")
    return "; ".join(problems)

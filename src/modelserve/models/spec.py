"""A model version's final spec: config.yaml merged with what the model file says, checked against it.

Whatever config.yaml leaves out is read from the file; whatever it states must agree with the file,
and a contradiction fails the load with both sides named, rather than failing on the first request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelserve.batching.priority import QueuePolicy
from modelserve.batching.sequence_scheduler import Control, SequenceSettings, State
from modelserve.errors import InvalidInput, ModelLoadError
from modelserve.repository.config import DynamicBatching, ModelConfig, Platform, TensorConfig
from modelserve.repository.scheduling import SequenceBatching
from modelserve.runtimes.base import Signature
from modelserve.types import TensorSpec, datatype_of, numpy_dtype

if TYPE_CHECKING:
    from modelserve.models.ensemble import EnsemblePlan


@dataclass(frozen=True, slots=True)
class BatchingDefaults:
    """Server-wide batching settings (MAX_BATCH_SIZE, BATCH_TIMEOUT_MS, MAX_QUEUE_SIZE, INLINE_INFERENCE_US);
    the first three are defaults for what configs omit."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 2048
    inline_below_us: float = 100.0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to serve one model version."""

    name: str
    version: int
    platform: Platform
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_queue_delay_ms: float
    preferred_batch_sizes: tuple[int, ...]
    max_queue_size: int
    instance_count: int
    adaptive_delay: bool = True  # config.yaml's dynamic_batching.queue_delay
    response_cache: bool = False  # config.yaml's response_cache.enable
    priority_levels: int = 0  # dynamic_batching.priority_levels: 0, one queue in arrival order
    default_priority_level: int = 0  # the level of a request that names none
    queue_policies: dict[int, QueuePolicy] = field(default_factory=dict)  # by level (0: the model's one queue)
    parameters: dict[str, Any] = field(default_factory=dict)
    ensemble: EnsemblePlan | None = None  # platform ensemble: its steps, run instead of a runtime and a batcher
    sequence: SequenceSettings | None = None  # sequence_batching: run by a SequenceScheduler, not a Batcher

    def priority_of(self, parameters: dict[str, object]) -> int:
        """The priority level a request's ``priority`` parameter names (0 or none: the default level), or
        InvalidInput; 0 for a model without priority levels, which ignores the parameter, as Triton does."""
        if not self.priority_levels:
            return 0
        value = parameters.get("priority", 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= self.priority_levels:
            raise InvalidInput(
                f"parameter 'priority' is {value!r}; model '{self.name}' has priority levels 1 (the highest) to "
                f"{self.priority_levels}, and 0 for its default level"
            )
        return value or self.default_priority_level

    @property
    def output_names(self) -> list[str]:
        """Outputs in declared order: what a request that names none gets back."""
        return [spec.name for spec in self.outputs]

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``, or InvalidInput listing the model's inputs."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise InvalidInput(f"model '{self.name}' has no input '{name}'; its inputs are {_listing(self.inputs)}")

    def check_outputs(self, names: list[str]) -> None:
        """Reject requested outputs the model does not have."""
        known = {spec.name for spec in self.outputs}
        for name in names:
            if name not in known:
                raise InvalidInput(
                    f"model '{self.name}' has no output '{name}'; its outputs are {_listing(self.outputs)}"
                )

    def validate(self, inputs: dict[str, np.ndarray[Any, Any]]) -> int:
        """Check names, datatypes and shapes of a request; return its batch size (1 when unbatched)."""
        for name in inputs:
            self.input(name)
        missing = [spec for spec in self.inputs if spec.name not in inputs]
        if missing:
            raise InvalidInput(
                f"model '{self.name}' needs input{'s' if len(missing) > 1 else ''} {_listing(missing)}, "
                "which the request does not send"
            )
        batch_sizes = set()
        for spec in self.inputs:
            array = inputs[spec.name]
            if array.dtype != numpy_dtype(spec.datatype) and not (
                spec.datatype == "BYTES" and array.dtype.kind in "OSU"
            ):
                raise InvalidInput(
                    f"input '{spec.name}' has datatype {_datatype_name(array)}; model '{self.name}' expects "
                    f"{spec.datatype}"
                )
            if not _shape_fits(array.shape, spec.shape):
                raise InvalidInput(
                    f"input '{spec.name}' has shape {list(array.shape)}; model '{self.name}' expects "
                    f"{list(spec.shape)} (-1: any size)"
                )
            if spec.datatype == "BYTES" and self.platform is Platform.ONNX:
                _check_text(array, spec.name)
            if self.max_batch_size > 0:
                batch_sizes.add(array.shape[0])
        if not batch_sizes:
            return 1
        if len(batch_sizes) > 1:
            raise InvalidInput(f"inputs of model '{self.name}' disagree on the batch size: {sorted(batch_sizes)}")
        batch = batch_sizes.pop()
        if not 1 <= batch <= self.max_batch_size:
            raise InvalidInput(
                f"batch size {batch} is outside 1..{self.max_batch_size} (max_batch_size of model '{self.name}')"
            )
        return int(batch)


def resolve(
    name: str,
    version: int,
    platform: Platform,
    config: ModelConfig,
    signature: Signature | None,
    defaults: BatchingDefaults,
    model_file: Path,
) -> ModelSpec:
    """Merge config and file into a spec, or raise ModelLoadError naming the file and the contradiction."""
    config_path = model_file.parent.parent / "config.yaml"
    if config.max_batch_size is not None:
        max_batch_size = config.max_batch_size
    else:
        max_batch_size = defaults.max_batch_size if signature is not None and signature.batched else 0
    batch_prefix = (-1,) if max_batch_size > 0 else ()
    sequence = None
    if config.sequence_batching is not None:
        sequence = _sequence_settings(config.sequence_batching, max_batch_size, _instance_count(platform, config))

    def declared(tensors: list[TensorConfig]) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t.name, t.datatype, (*batch_prefix, *t.dims)) for t in tensors)

    inputs, outputs = declared(config.inputs), declared(config.outputs)
    if signature is not None:
        if max_batch_size > 0 and not signature.batched:
            fixed = [s.describe() for s in signature.inputs if s.shape[:1] != (-1,)] or ["(it has no inputs)"]
            raise ModelLoadError(
                f"{config_path}: max_batch_size {max_batch_size} needs a variable first dimension, but "
                f"{model_file} fixes input {fixed[0]}; set max_batch_size: 0 or export a dynamic batch axis"
            )
        found_inputs, found_outputs = signature.inputs, signature.outputs
        if sequence is not None:
            found_inputs, found_outputs = _without_fed(sequence, signature, config_path, model_file)
        inputs = _agree(inputs, found_inputs, "input", config_path, model_file, require_all=True)
        outputs = _agree(outputs, found_outputs, "output", config_path, model_file, require_all=False)
    batching = config.dynamic_batching
    return ModelSpec(
        name=name,
        version=version,
        platform=platform,
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
        max_queue_delay_ms=_first(batching.max_queue_delay_ms if batching else None, defaults.max_queue_delay_ms),
        preferred_batch_sizes=tuple(batching.preferred_batch_sizes) if batching else (),
        adaptive_delay=batching is None or batching.queue_delay == "adaptive",
        max_queue_size=int(_first(batching.max_queue_size if batching else None, defaults.max_queue_size)),
        instance_count=_instance_count(platform, config),
        response_cache=config.response_cache.enable,
        priority_levels=batching.priority_levels if batching else 0,
        default_priority_level=(batching.default_priority_level or batching.priority_levels) if batching else 0,
        queue_policies=_queue_policies(batching),
        parameters=dict(config.parameters),
        sequence=sequence,
    )


_CONTROL_DATATYPES = {"int32_false_true": "INT32", "fp32_false_true": "FP32", "bool_false_true": "BOOL"}


def _sequence_settings(section: SequenceBatching, max_batch_size: int, instance_count: int) -> SequenceSettings:
    controls = []
    for control_input in section.control_input:
        control = control_input.control[0]
        kind = control.kind.removeprefix("CONTROL_SEQUENCE_")
        if kind == "CORRID":
            assert control.data_type is not None
            controls.append(Control(control_input.name, kind, control.data_type))
            continue
        field_name, values = next(
            (f, getattr(control, f)) for f in _CONTROL_DATATYPES if getattr(control, f) is not None
        )
        controls.append(Control(control_input.name, kind, _CONTROL_DATATYPES[field_name], values[0], values[1]))
    oldest = section.oldest
    return SequenceSettings(
        direct=oldest is None,
        max_batch_size=max_batch_size,
        instance_count=instance_count,
        idle_us=section.max_sequence_idle_microseconds,
        max_candidates=oldest.max_candidate_sequences if oldest else 0,
        preferred_batch_sizes=tuple(oldest.preferred_batch_size) if oldest else (),
        max_queue_delay_us=oldest.max_queue_delay_microseconds if oldest else 0,
        controls=tuple(controls),
        states=tuple(State(s.input_name, s.output_name, s.data_type, tuple(s.dims)) for s in section.state),
    )


def _without_fed(
    sequence: SequenceSettings, signature: Signature, config_path: Path, model_file: Path
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs a client sees: those the server feeds (controls, states) and keeps
    (state outputs) taken out, once each is found in the file with the datatype the config gives it."""
    inputs = {spec.name: spec for spec in signature.inputs}
    outputs = {spec.name: spec for spec in signature.outputs}
    expected = [(c.name, c.datatype, inputs, "input") for c in sequence.controls]
    for state in sequence.states:
        expected += [(state.input, state.datatype, inputs, "input"), (state.output, state.datatype, outputs, "output")]
    for name, datatype, found, kind in expected:
        spec = found.get(name)
        if spec is None:
            raise ModelLoadError(
                f"{config_path}: sequence_batching names {kind} '{name}', but {model_file} has {kind}s "
                f"{_listing(tuple(found.values()))}"
            )
        if spec.datatype != datatype:
            raise ModelLoadError(
                f"{config_path}: sequence_batching gives {kind} '{name}' datatype {datatype}, but {model_file} has "
                f"{spec.describe()}"
            )
    return (
        tuple(s for s in signature.inputs if s.name not in sequence.fed),
        tuple(s for s in signature.outputs if s.name not in sequence.kept),
    )


def _queue_policies(batching: DynamicBatching | None) -> dict[int, QueuePolicy]:
    """Each level's queue policy: its own, else the default one; level 0 where the model has no levels."""
    if batching is None:
        return {}
    levels = range(1, batching.priority_levels + 1) if batching.priority_levels else [0]
    policies = {}
    for level in levels:
        if (given := batching.priority_queue_policy.get(level, batching.default_queue_policy)) is not None:
            policies[level] = QueuePolicy(
                given.timeout_action,
                given.default_timeout_microseconds,
                given.allow_timeout_override,
                given.max_queue_size,
            )
    return policies


def _instance_count(platform: Platform, config: ModelConfig) -> int:
    """The batches that may run at once. Where config.yaml leaves it out, ONNX models on the CPU get one
    per CPU; the other backends one, as their libraries size their own thread pools (PyTorch) or hold
    an execution context on the GPU per instance (TensorRT)."""
    if platform is not Platform.ONNX:
        return config.instance_count
    from modelserve.runtimes.onnx import instance_count  # onnxruntime is in by now: the model has loaded

    return instance_count(config)


def _agree(
    declared: tuple[TensorSpec, ...],
    found: tuple[TensorSpec, ...],
    kind: str,
    config_path: Path,
    model_file: Path,
    *,
    require_all: bool,
) -> tuple[TensorSpec, ...]:
    if not declared:
        return found
    by_name = {spec.name: spec for spec in found}
    for spec in declared:
        actual = by_name.get(spec.name)
        if actual is None:
            raise ModelLoadError(
                f"{config_path}: declares {kind} '{spec.name}', but {model_file} has {kind}s {_listing(found)}"
            )
        if actual.datatype != spec.datatype or not _shapes_agree(spec.shape, actual.shape):
            raise ModelLoadError(
                f"{config_path}: {kind} {spec.describe()} contradicts {model_file}, which has {actual.describe()}"
            )
    undeclared = [s for s in found if s.name not in {d.name for d in declared}]
    if require_all and undeclared:
        raise ModelLoadError(f"{config_path}: {model_file} also needs {kind}s {_listing(undeclared)}; declare them")
    # Where the config says "any size" but the file fixes one, the file's size is what will run.
    return tuple(TensorSpec(d.name, d.datatype, _narrower(d.shape, by_name[d.name].shape)) for d in declared)


def _check_text(array: np.ndarray[Any, Any], name: str) -> None:
    # ONNX Runtime's string tensors hold text: bytes that are not UTF-8 cannot reach the model. Checked
    # here, before batching, so that one such request never fails the others in its batch.
    try:
        for value in array.reshape(-1):
            if isinstance(value, bytes):
                value.decode()
    except UnicodeDecodeError:
        raise InvalidInput(
            f"input '{name}' holds bytes that are not UTF-8 text; ONNX string tensors take text"
        ) from None


def _narrower(declared: tuple[int, ...], found: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(f if d == -1 else d for d, f in zip(declared, found, strict=True))


def _shapes_agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _shape_fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(shape) == len(expected) and all(e in (-1, s) for s, e in zip(shape, expected, strict=True))


def _listing(specs: tuple[TensorSpec, ...] | list[TensorSpec]) -> str:
    return ", ".join(spec.describe() for spec in specs) or "(none)"


def _datatype_name(array: np.ndarray[Any, Any]) -> str:
    try:
        return datatype_of(array.dtype)
    except InvalidInput:
        return str(array.dtype)


def _first(value: float | int | None, default: float | int) -> float | int:
    return default if value is None else value

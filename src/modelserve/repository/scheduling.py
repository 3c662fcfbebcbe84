"""config.yaml's scheduling sections beyond dynamic batching, spelt as config.pbtxt spells them: an
ensemble's ``ensemble_scheduling`` (models/ensemble.py runs it) and a stateful model's
``sequence_batching`` (batching/sequences.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelserve.repository.strict import Strict
from modelserve.types import DATATYPE_TO_NUMPY


class EnsembleStep(Strict):
    """One step of an ensemble, as config.pbtxt spells it: the model it calls, the version (-1: the one a
    client naming none gets), and the tensors. The maps' keys are the step model's own tensor names,
    their values the ensemble's names for them: what connects the steps to each other and to the
    ensemble's inputs and outputs."""

    model_name: str = Field(min_length=1)
    model_version: int = -1
    input_map: dict[str, str] = Field(min_length=1)
    output_map: dict[str, str] = Field(min_length=1)

    @field_validator("model_version")
    @classmethod
    def _latest_or_positive(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"model_version {value} must be -1 (the latest) or a version number")
        return value


class EnsembleScheduling(Strict):
    """Triton's ``ensemble_scheduling``: the steps, in any order; each runs once its inputs exist."""

    step: list[EnsembleStep] = Field(min_length=1)


_CORRID_TYPES = ("INT32", "INT64", "UINT32", "UINT64", "BYTES")


def _v2_datatype(value: str) -> str:
    """config.pbtxt's ``TYPE_UINT64`` or config.yaml's ``UINT64``, as the V2 datatype."""
    value = value.removeprefix("TYPE_")
    return "BYTES" if value == "STRING" else value


class SequenceControl(Strict):
    """One control a sequence model takes as an input (Triton's ModelSequenceBatching.Control): the server
    fills it for every row of a batch. START, END and READY give one of ``int32_false_true``,
    ``fp32_false_true`` or ``bool_false_true`` (the values for false and true); CORRID its ``data_type``."""

    kind: Literal["CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_READY", "CONTROL_SEQUENCE_CORRID"]
    int32_false_true: list[int] | None = None
    fp32_false_true: list[float] | None = None
    bool_false_true: list[bool] | None = None
    data_type: str | None = None

    @field_validator("data_type")
    @classmethod
    def _corrid_datatype(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if (datatype := _v2_datatype(value)) not in _CORRID_TYPES:
            raise ValueError(f"data_type {value!r} cannot hold a sequence id; one of {', '.join(_CORRID_TYPES)}")
        return datatype

    @model_validator(mode="after")
    def _values_fit_the_kind(self) -> SequenceControl:
        given = [v for v in (self.int32_false_true, self.fp32_false_true, self.bool_false_true) if v is not None]
        if self.kind == "CONTROL_SEQUENCE_CORRID":
            if self.data_type is None or given:
                raise ValueError("CONTROL_SEQUENCE_CORRID takes data_type (INT32, INT64, UINT32, UINT64 or BYTES) only")
            return self
        if self.data_type is not None or len(given) != 1 or len(given[0]) != 2:
            raise ValueError(
                f"{self.kind} takes one of int32_false_true, fp32_false_true or bool_false_true, with two values "
                "(false, then true)"
            )
        return self


class SequenceControlInput(Strict):
    """A model input the server fills with one control."""

    name: str = Field(min_length=1)
    control: list[SequenceControl] = Field(min_length=1, max_length=1)


class SequenceState(Strict):
    """An implicit state (Triton's ``state``): the server keeps a tensor per sequence, feeds it to the model
    as ``input_name`` and keeps the model's ``output_name`` as the next one, never answering it. It starts
    as zeros (``initial_state`` may say so explicitly: ``zero_data: true``)."""

    input_name: str = Field(min_length=1)
    output_name: str = Field(min_length=1)
    data_type: str
    dims: list[int] = Field(min_length=1)
    initial_state: dict[str, Any] | None = None

    @field_validator("data_type")
    @classmethod
    def _known(cls, value: str) -> str:
        if (datatype := _v2_datatype(value)) not in DATATYPE_TO_NUMPY or datatype == "BYTES":
            raise ValueError(f"data_type {value!r} is not a numeric datatype")
        return datatype

    @field_validator("dims")
    @classmethod
    def _fixed(cls, value: list[int]) -> list[int]:
        if any(d < 1 for d in value):
            raise ValueError(f"dims {value} must be fixed positive sizes: a state starts as zeros of that shape")
        return value

    @field_validator("initial_state")
    @classmethod
    def _zeros_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("zero_data") is not True:
            raise ValueError("only zero_data: true is served (data_file is not)")
        return value


class SequenceOldest(Strict):
    """The oldest strategy: batches of the next requests of the sequences that have waited longest."""

    max_candidate_sequences: int = Field(0, ge=0)  # 0: no limit; more sequences wait in a backlog
    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = Field(0, ge=0, le=10_000_000)


class SequenceDirect(Strict):
    """The direct strategy: each sequence owns a batch slot until it ends. Triton's
    ``max_queue_delay_microseconds`` and ``minimum_slot_utilization`` are not served: a batch never waits."""


class SequenceBatching(Strict):
    """Triton's ``sequence_batching``: a stateful model's requests, in sequences (batching/sequence.py)."""

    direct: SequenceDirect | None = None
    oldest: SequenceOldest | None = None
    max_sequence_idle_microseconds: int = Field(1_000_000, ge=1)  # Triton's default: 1 s
    control_input: list[SequenceControlInput] = Field(default_factory=list)
    state: list[SequenceState] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_strategy(self) -> SequenceBatching:
        if self.direct is not None and self.oldest is not None:
            raise ValueError("set one of direct or oldest, not both")
        names = [c.name for c in self.control_input] + [s.input_name for s in self.state]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"each control and state input needs a name of its own; repeated: {', '.join(duplicates)}")
        kinds = [c.control[0].kind for c in self.control_input]
        if twice := sorted({k for k in kinds if kinds.count(k) > 1}):
            raise ValueError(f"each control kind may feed one input; repeated: {', '.join(twice)}")
        return self

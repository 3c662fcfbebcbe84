"""Triton's model configuration (``config.pbtxt``, or its JSON form in a load request) read into
config.yaml's fields, so a repository moved from Triton loads as it is.

Its platform and backend names, ``TYPE_*`` datatypes, ``max_queue_delay_microseconds``, instance groups
(their counts add up), ``string_value`` parameters, nested version policies, an ensemble's
``ensemble_scheduling`` and a stateful model's ``sequence_batching`` are read. Fields with no
counterpart here (``optimization``, ``model_warmup``, ...) are ignored, as a config.yaml cannot hold
them; a decoupled ``model_transaction_policy`` is refused, as a model that needs it would answer
wrongly without it. A ``config.pbtxt`` is parsed with the protobuf definitions tritonclient ships (the same
``ModelConfig`` message Triton reads), so a field Triton does not know is an error there too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from pydantic import ValidationError

from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig, explain

# Triton's platform and backend names, and ours.
PLATFORMS = {
    "onnxruntime_onnx": "onnx",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "pytorch_libtorch": "torchscript",
    "pytorch": "torchscript",
    "torchscript": "torchscript",
    "tensorrt_plan": "tensorrt",
    "tensorrt": "tensorrt",
    "sklearn": "sklearn",
    "vllm": "llm",
    "llm": "llm",
    "python": "python",  # Triton's backend: "python"
    "ensemble": "ensemble",
}


def read_pbtxt(path: Path) -> ModelConfig:
    """A ``config.pbtxt`` as a ModelConfig, or ModelLoadError naming the file and what is wrong in it."""
    from tritonclient.grpc import model_config_pb2

    try:
        message = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a Triton model configuration: {exc}") from None
    document = json_format.MessageToDict(message, preserving_proto_field_name=True)
    document.setdefault("max_batch_size", 0)  # Triton's default, which the text leaves out
    try:
        return ModelConfig.model_validate(config_fields(document))
    except ValidationError as exc:
        raise ModelLoadError(f"{path}: {explain(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def config_fields(document: dict[str, Any]) -> dict[str, Any]:
    """config.yaml's fields from Triton's model configuration as JSON (a config.pbtxt read, or a load
    request's ``config``); ValueError naming a field that holds a wrong value."""
    fields: dict[str, Any] = {}
    # A model that needs this would answer wrongly without it: refused, not served as if it were absent.
    if document.get("model_transaction_policy", {}).get("decoupled"):
        raise ValueError("model_transaction_policy.decoupled: decoupled models are not served here")
    if name := document.get("name"):
        fields["name"] = name
    kind = document.get("platform") or document.get("backend")
    if kind:
        if kind not in PLATFORMS:
            raise ValueError(f"platform {kind!r} is not served here; one of {', '.join(sorted(PLATFORMS))}")
        fields["platform"] = PLATFORMS[kind]
    if "max_batch_size" in document:
        fields["max_batch_size"] = document["max_batch_size"]
    for key, ours in (("input", "inputs"), ("output", "outputs")):
        if key in document:
            fields[ours] = [_tensor(t) for t in document[key]]
    if (batching := document.get("dynamic_batching")) is not None:
        section: dict[str, Any] = {}
        if "max_queue_delay_microseconds" in batching:
            section["max_queue_delay_ms"] = (
                _whole(batching["max_queue_delay_microseconds"], "max_queue_delay_microseconds") / 1000
            )
        if "preferred_batch_size" in batching:
            section["preferred_batch_sizes"] = batching["preferred_batch_size"]
        for key in ("priority_levels", "default_priority_level"):
            if key in batching:
                section[key] = batching[key]
        if (queue := batching.get("default_queue_policy")) and "max_queue_size" in queue:
            section["max_queue_size"] = queue["max_queue_size"]
        fields["dynamic_batching"] = section
    if (sequence := document.get("sequence_batching")) is not None:
        fields["sequence_batching"] = _sequence_batching(sequence)
    if groups := document.get("instance_group"):
        fields["instance_count"] = sum(_whole(group.get("count", 1), "instance_group.count") for group in groups)
    if "version_policy" in document:
        fields["version_policy"] = document["version_policy"]
    if parameters := document.get("parameters"):
        fields["parameters"] = {k: v.get("string_value") if isinstance(v, dict) else v for k, v in parameters.items()}
    if (cache := document.get("response_cache")) is not None:
        fields["response_cache"] = {"enable": bool(cache.get("enable", False))}
    if (scheduling := document.get("ensemble_scheduling")) is not None:
        fields["ensemble_scheduling"] = {"step": [_step(step) for step in scheduling.get("step", [])]}
    return fields


def _sequence_batching(section: dict[str, Any]) -> dict[str, Any]:
    """``sequence_batching`` as config.yaml spells it: the same fields, Triton's 64-bit integers (strings in
    its JSON) as numbers. Direct's ``max_queue_delay_microseconds`` and ``minimum_slot_utilization`` are
    left out: a direct batch never waits here."""
    fields: dict[str, Any] = {}
    if "max_sequence_idle_microseconds" in section:
        fields["max_sequence_idle_microseconds"] = _whole(
            section["max_sequence_idle_microseconds"], "sequence_batching.max_sequence_idle_microseconds"
        )
    if (oldest := section.get("oldest")) is not None:
        fields["oldest"] = {
            key: _whole(oldest[key], f"sequence_batching.oldest.{key}")
            for key in ("max_candidate_sequences", "max_queue_delay_microseconds")
            if key in oldest
        }
        if "preferred_batch_size" in oldest:
            fields["oldest"]["preferred_batch_size"] = oldest["preferred_batch_size"]
    elif "direct" in section or "oldest" not in section:
        fields["direct"] = {}  # Triton's default strategy
    if "control_input" in section:
        # Protobuf's JSON leaves out an enum's first value: a control without a kind starts sequences.
        fields["control_input"] = [
            {**item, "control": [{"kind": "CONTROL_SEQUENCE_START", **c} for c in item.get("control", [])]}
            for item in section["control_input"]
        ]
    if "state" in section:
        fields["state"] = [
            {**state, "dims": [_whole(d, "sequence_batching.state.dims") for d in state.get("dims", [])]}
            for state in section["state"]
        ]
    return fields


def _step(step: dict[str, Any]) -> dict[str, Any]:
    """An ensemble step: Triton's JSON writes its int64 ``model_version`` as a string ("-1")."""
    fields: dict[str, Any] = {key: step[key] for key in ("model_name", "input_map", "output_map") if key in step}
    if "model_version" in step:
        fields["model_version"] = _whole(step["model_version"], "ensemble_scheduling.step.model_version")
    return fields


def _tensor(tensor: dict[str, Any]) -> dict[str, Any]:
    datatype = str(tensor.get("data_type", ""))
    datatype = datatype.removeprefix("TYPE_")
    return {
        "name": tensor["name"],
        "datatype": "BYTES" if datatype == "STRING" else datatype,
        "dims": tensor.get("dims", []),
    }


def _whole(value: Any, field: str) -> int:
    """Triton's JSON writes 64-bit integers as strings ("8"); anything else that is not one is refused."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
        raise ValueError(f"{field}: {value!r} is not a whole number")
    return int(value)

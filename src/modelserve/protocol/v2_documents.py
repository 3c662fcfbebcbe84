"""The JSON documents of the V2 metadata, model-configuration and statistics endpoints.

The configuration follows Triton's model configuration as JSON (``TYPE_FP32``, ``input``/``output``,
``instance_group``), which is what perf_analyzer and tritonclient read.
"""

from __future__ import annotations

from typing import Any

from modelserve.models.ensemble import Step
from modelserve.models.records import ModelVersion
from modelserve.models.spec import ModelSpec
from modelserve.models.stats import Duration
from modelserve.repository.config import Platform
from modelserve.types import TensorSpec

# What `GET /v2` and ServerMetadata announce.
EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository", "model_configuration", "system_shared_memory"]

# Triton's names for our platforms, so tools that branch on them recognise the model.
TRITON_PLATFORM = {
    Platform.ONNX: ("onnxruntime_onnx", "onnxruntime"),
    Platform.TORCHSCRIPT: ("pytorch_libtorch", "pytorch"),
    Platform.SKLEARN: ("sklearn", "sklearn"),
    Platform.TENSORRT: ("tensorrt_plan", "tensorrt"),
    Platform.PYTHON: ("python", "python"),
    Platform.LLM: ("vllm", "vllm"),  # Triton serves LLMs through its vLLM backend, text_input → text_output
    Platform.ENSEMBLE: ("ensemble", ""),  # the ensemble scheduler, no backend
}


def model_metadata(name: str, versions: list[ModelVersion], record: ModelVersion) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``."""
    spec = _spec(record)
    return {
        "name": name,
        "versions": [str(v.version) for v in versions if v.version is not None],
        "platform": TRITON_PLATFORM[spec.platform][0],
        "inputs": [_tensor(t) for t in spec.inputs],
        "outputs": [_tensor(t) for t in spec.outputs],
    }


def model_config(record: ModelVersion) -> dict[str, Any]:
    """``GET /v2/models/{name}/config``: Triton's model configuration, as JSON."""
    spec = _spec(record)
    platform, backend = TRITON_PLATFORM[spec.platform]
    batch = 1 if spec.max_batch_size > 0 else 0
    config: dict[str, Any] = {
        "name": spec.name,
        "platform": platform,
        "backend": backend,
        "version_policy": {"specific": {"versions": [spec.version]}},
        "max_batch_size": spec.max_batch_size,
        "input": [_config_tensor(t, batch, is_input=True) for t in spec.inputs],
        "output": [_config_tensor(t, batch, is_input=False) for t in spec.outputs],
        "instance_group": [{"name": spec.name, "kind": "KIND_CPU", "count": spec.instance_count, "gpus": []}],
        "parameters": {k: {"string_value": str(v)} for k, v in spec.parameters.items()},
        "response_cache": {"enable": spec.response_cache},
    }
    if (llm := getattr(record.runtime, "llm", None)) is not None:
        # A generative model's engine settings as it runs with them: config.yaml's llm section over the
        # server's MAX_NUM_SEQS, QUANTIZATION and VLLM_GPU_MEMORY_UTILIZATION, as Triton's vLLM backend
        # lists its engine arguments among the parameters.
        engine = {k: v for k, v in llm.model_dump().items() if v is not None and v != []}
        config["parameters"] |= {k: {"string_value": str(v)} for k, v in engine.items()}
    if spec.ensemble is not None:
        # As Triton's: no instance group (it refuses one on an ensemble), the steps instead of a batcher.
        del config["instance_group"]
        in_config_order = sorted(spec.ensemble.steps, key=lambda step: step.number)
        config["ensemble_scheduling"] = {"step": [_step(step) for step in in_config_order]}
    elif spec.max_batch_size > 0:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(spec.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(spec.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": spec.max_queue_size},
            "priority_levels": spec.priority_levels,
            "default_priority_level": spec.default_priority_level,
            "priority_queue_policy": {
                str(level): {
                    "timeout_action": policy.timeout_action,
                    "default_timeout_microseconds": policy.default_timeout_us,
                    "allow_timeout_override": policy.allow_timeout_override,
                    "max_queue_size": policy.max_queue_size,
                }
                for level, policy in spec.queue_policies.items()
                if level
            },
        }
    return config


def model_statistics(records: list[ModelVersion]) -> dict[str, Any]:
    """``GET /v2/models[/{name}[/versions/{v}]]/stats``, in the statistics extension's shape."""
    stats = []
    for record in records:
        s = record.stats
        stats.append(
            {
                "name": record.name,
                "version": str(record.version),
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": _duration(s.success),
                    "fail": _duration(s.fail),
                    "queue": _duration(s.queue),
                    "compute_input": _duration(s.compute_input),
                    "compute_infer": _duration(s.compute_infer),
                    "compute_output": _duration(s.compute_output),
                    "cache_hit": _duration(s.cache_hit),
                    "cache_miss": _duration(s.cache_miss),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": _duration(b.compute_input),
                        "compute_infer": _duration(b.compute_infer),
                        "compute_output": _duration(b.compute_output),
                    }
                    for size, b in sorted(s.batches.items())
                ],
                "memory_usage": [
                    {"type": kind, "id": 0, "byte_size": size} for kind, size in (record.memory or {"CPU": 0}).items()
                ],
            }
        )
    return {"model_stats": stats}


def repository_entry(record: ModelVersion) -> dict[str, Any]:
    """One row of ``POST /v2/repository/index``."""
    entry: dict[str, Any] = {"name": record.name}
    if record.version is not None:
        entry["version"] = str(record.version)
    entry["state"] = record.state.value
    entry["reason"] = record.reason
    return entry


def _spec(record: ModelVersion) -> ModelSpec:
    assert record.spec is not None, "metadata is only built for loaded versions"
    return record.spec


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _config_tensor(spec: TensorSpec, batch: int, *, is_input: bool) -> dict[str, Any]:
    datatype = "STRING" if spec.datatype == "BYTES" else spec.datatype
    tensor: dict[str, Any] = {"name": spec.name, "data_type": f"TYPE_{datatype}", "dims": list(spec.shape[batch:])}
    tensor["is_shape_tensor"] = False
    if is_input:
        tensor.update(format="FORMAT_NONE", allow_ragged_batch=False, optional=False)
    else:
        tensor["label_filename"] = ""
    return tensor


def _step(step: Step) -> dict[str, Any]:
    return {
        "model_name": step.model,
        "model_version": step.version if step.version is not None else -1,
        "input_map": {feed.name: feed.tensor for feed in step.feeds},
        "output_map": dict(step.output_map),
    }


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}

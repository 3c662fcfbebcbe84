"""An ONNX model's instances and ONNX Runtime's intra-op threads, by default from the CPUs this process may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.cpus import available_cpus
from modelserve.models.spec import BatchingDefaults, resolve
from modelserve.repository.config import ModelConfig, Platform
from modelserve.runtimes.onnx import OnnxRuntime, instance_count
from tests.builders import reference_inputs, write_config

CPUS = available_cpus()


def loaded(model_file: Path, config_text: str = "") -> tuple[OnnxRuntime, int]:
    """The model loaded as the server loads it: its runtime, and the instance_count its spec resolves."""
    config = ModelConfig.from_file(write_config(model_file.parent.parent, config_text or "{}\n"))
    runtime = OnnxRuntime(model_file, config)
    signature = runtime.load()
    spec = resolve("mlp", 1, Platform.ONNX, config, signature, BatchingDefaults(), model_file)
    return runtime, spec.instance_count


def intra_op_threads(runtime: OnnxRuntime) -> int:
    assert runtime.session is not None
    return int(runtime.session.get_session_options().intra_op_num_threads)


@pytest.fixture
def mlp(built_repository: Path, tmp_path: Path) -> Path:
    model_file = tmp_path / "mlp" / "1" / "model.onnx"
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes((built_repository / "mlp" / "1" / "model.onnx").read_bytes())
    return model_file


def test_by_default_one_instance_per_cpu_each_on_one_thread(mlp: Path) -> None:
    """onnxruntime's own default (0) would give every call a thread per physical core of the host."""
    runtime, instances = loaded(mlp)
    assert instances == CPUS
    assert intra_op_threads(runtime) == 1
    assert runtime.infer({"input": reference_inputs()["mlp"]})["output"].shape == (3, 4)


@pytest.mark.parametrize("instances", [1, 2, 3])
def test_the_instances_set_share_the_cpus(mlp: Path, instances: int) -> None:
    """One instance gets every CPU for its calls; more divide them, one thread at least."""
    runtime, resolved = loaded(mlp, f"instance_count: {instances}\n")
    assert resolved == instances
    assert intra_op_threads(runtime) == max(1, CPUS // instances)


def test_threads_set_in_parameters_win(mlp: Path) -> None:
    runtime, instances = loaded(mlp, "parameters: {intra_op_num_threads: 3}\n")
    assert instances == CPUS
    assert intra_op_threads(runtime) == 3


def test_on_a_gpu_one_instance_lets_batches_grow() -> None:
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert instance_count(ModelConfig(), gpu) == 1
    assert instance_count(ModelConfig(instance_count=4), gpu) == 4
    assert instance_count(ModelConfig(), ["CPUExecutionProvider"]) == CPUS


@pytest.mark.parametrize("platform", [Platform.TORCHSCRIPT, Platform.SKLEARN, Platform.TENSORRT])
def test_other_backends_keep_one_instance(tmp_path: Path, platform: Platform) -> None:
    """PyTorch sizes its own thread pool; a TensorRT instance is an execution context on the GPU."""
    spec = resolve("m", 1, platform, ModelConfig(), None, BatchingDefaults(), tmp_path / "m" / "1" / "model")
    assert spec.instance_count == 1

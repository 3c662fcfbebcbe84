"""Triton Python models (platform python): Triton's own examples run unchanged, on the runtime alone and
through a real model manager, with BLS requests reaching the manager's other models in-process."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import triton_python_backend_utils as pb_utils
from modelserve.errors import InferenceFailed, InvalidInput, ModelLoadError, ModelNotFound
from modelserve.models.manager import ModelManager
from modelserve.models.spec import BatchingDefaults
from modelserve.repository.config import ModelConfig, Platform
from modelserve.repository.layout import ModelRepository, read_source
from modelserve.runtimes.base import runtime_class
from modelserve.runtimes.python import PythonRuntime
from modelserve.types import InferenceRequest
from tests.python_models import (
    ADD_SUB,
    ADD_SUB_CONFIG,
    ONE_TENSOR_CONFIG,
    PREPROCESS,
    PREPROCESS_CONFIG,
    RAISES,
    REFUSES_NEGATIVE,
    SLEEPS,
    sleeps_config,
    write_bls_repository,
    write_python_model,
)

A = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
B = np.array([0.5, 0.25, -1.0, 2.0], dtype=np.float32)


def _runtime(repository: Path, name: str, source: str, config: str) -> PythonRuntime:
    folder = write_python_model(repository, name, source, config)
    source_ = read_source(name, folder)
    runtime = runtime_class(source_.platform)(source_.files[1], source_.config)
    assert isinstance(runtime, PythonRuntime)
    return runtime


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[Callable[[str, str, str], PythonRuntime]]:
    """Loads a Python model written into a fresh repository; unloads it at teardown."""
    runtimes: list[PythonRuntime] = []

    def load(name: str, source: str, config: str) -> PythonRuntime:
        runtime = _runtime(tmp_path, name, source, config)
        runtimes.append(runtime)
        assert runtime.load() is None  # the signature is config.yaml's
        return runtime

    yield load
    for runtime in runtimes:
        runtime.unload()


def _one_tensor(model: str) -> str:
    return ONE_TENSOR_CONFIG + f"name: {model}\n"


def _modules(model: str) -> list[str]:
    """The modules loaded from model.py files of ``model``."""
    return [name for name in sys.modules if name.startswith(f"modelserve_python_model_{model}_")]


def _module(model: str) -> Any:
    """The one module loaded from ``model``'s model.py, where a test model keeps what it saw."""
    names = _modules(model)
    assert len(names) == 1, names
    return sys.modules[names[0]]


# -- the repository and the runtime -------------------------------------------------------------------


def test_backend_python_is_platform_python(tmp_path: Path) -> None:
    write_python_model(tmp_path, "add_sub", ADD_SUB, ADD_SUB_CONFIG)
    source = read_source("add_sub", tmp_path / "add_sub")
    assert source.platform is Platform.PYTHON
    assert source.files[1] == tmp_path / "add_sub" / "1" / "model.py"
    assert runtime_class(Platform.PYTHON) is PythonRuntime


def test_backend_python_contradicting_the_platform_is_refused() -> None:
    with pytest.raises(ValueError, match="backend python and platform onnx disagree"):
        ModelConfig.model_validate({"backend": "python", "platform": "onnx"})
    with pytest.raises(ValueError, match="backend"):
        ModelConfig.model_validate({"backend": "onnxruntime"})


def test_model_py_is_found_without_a_config_platform(tmp_path: Path) -> None:
    write_python_model(tmp_path, "echo", REFUSES_NEGATIVE, ONE_TENSOR_CONFIG.replace("backend: python\n", ""))
    assert read_source("echo", tmp_path / "echo").platform is Platform.PYTHON


def test_add_sub_example_runs_unchanged(
    loaded: Callable[..., PythonRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = loaded("add_sub", ADD_SUB, ADD_SUB_CONFIG)
    outputs = runtime.infer({"INPUT0": A, "INPUT1": B})
    np.testing.assert_array_equal(outputs["OUTPUT0"], A + B)
    np.testing.assert_array_equal(outputs["OUTPUT1"], A - B)
    assert outputs["OUTPUT0"].dtype == np.float32
    runtime.unload()
    assert "Cleaning up..." in capsys.readouterr().out  # its finalize ran


def test_initialize_gets_tritons_args(tmp_path: Path, loaded: Callable[..., PythonRuntime]) -> None:
    source = """import json
import triton_python_backend_utils as pb_utils

seen = []


class TritonPythonModel:
    def initialize(self, args):
        seen.append(args)

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", requests[0].inputs()[0].as_numpy())])]
"""
    config = _one_tensor("seer") + "max_batch_size: 4\ninstance_count: 2\nparameters: {scale: 3}\n"
    loaded("seer", source, config)
    module = _module("seer")
    assert [args["model_instance_name"] for args in module.seen] == ["seer_0_0", "seer_0_1"]
    args = module.seen[0]
    assert all(isinstance(value, str) for value in args.values())
    assert args["model_name"] == "seer"
    assert args["model_version"] == "1"
    assert args["model_repository"] == str(tmp_path / "seer")
    assert args["model_instance_kind"] == "CPU"
    assert args["model_instance_device_id"] == "0"
    model_config = json.loads(args["model_config"])
    assert model_config["name"] == "seer"
    assert model_config["backend"] == "python"
    assert model_config["max_batch_size"] == 4
    assert model_config["instance_group"][0]["count"] == 2
    assert model_config["parameters"] == {"scale": {"string_value": "3"}}
    assert pb_utils.get_input_config_by_name(model_config, "X") == {"name": "X", "data_type": "TYPE_FP32", "dims": [1]}
    output = pb_utils.get_output_config_by_name(model_config, "Y")
    assert output is not None
    assert pb_utils.triton_string_to_numpy(output["data_type"]) is np.float32
    assert pb_utils.get_output_config_by_name(model_config, "Z") is None
    assert not pb_utils.using_decoupled_model_transaction_policy(model_config)


def test_a_config_without_tensors_fails_the_load_saying_so(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, "bare", ADD_SUB, "backend: python\n")
    with pytest.raises(ModelLoadError, match=r"bare/config.yaml: a Python model needs its inputs and outputs declared"):
        runtime.load()
    runtime = _runtime(tmp_path, "half", ADD_SUB, "backend: python\ninputs: [{name: X, datatype: FP32, dims: [1]}]\n")
    with pytest.raises(ModelLoadError, match="needs its outputs declared"):
        runtime.load()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def broken(:\n", r"model.py: importing it raised SyntaxError"),
        ("import not_a_module_anywhere\n", r"model.py: importing it raised ModuleNotFoundError"),
        ("class Other:\n    pass\n", r"model.py: defines no class TritonPythonModel"),
        ("class TritonPythonModel:\n    pass\n", r"TritonPythonModel has no execute method"),
        (
            "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('no weights')\n"
            "    def execute(self, requests):\n        return []\n",
            r"TritonPythonModel.initialize raised RuntimeError: no weights",
        ),
    ],
    ids=["syntax", "import", "no-class", "no-execute", "initialize"],
)
def test_a_model_py_that_cannot_start_fails_the_load_naming_it(tmp_path: Path, source: str, message: str) -> None:
    runtime = _runtime(tmp_path, "bad", source, _one_tensor("bad"))
    with pytest.raises(ModelLoadError, match=message):
        runtime.load()
    runtime.unload()
    assert not _modules("bad")  # its module went with it


def test_two_models_each_get_their_own_module(loaded: Callable[..., PythonRuntime]) -> None:
    source = """import triton_python_backend_utils as pb_utils

FACTOR = {factor}


class TritonPythonModel:
    def execute(self, requests):
        x = requests[0].inputs()[0].as_numpy()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * FACTOR)])]
"""
    twice = loaded("twice", source.format(factor=2), _one_tensor("twice"))
    thrice = loaded("thrice", source.format(factor=3), _one_tensor("thrice"))
    x = np.array([5.0], dtype=np.float32)
    assert twice.infer({"X": x})["Y"].tolist() == [10.0]
    assert thrice.infer({"X": x})["Y"].tolist() == [15.0]


def test_preprocessing_with_bytes_and_parameters(loaded: Callable[..., PythonRuntime]) -> None:
    runtime = loaded("preprocess", PREPROCESS, PREPROCESS_CONFIG)
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    captions = np.array([[b"a cat"], [b"caf\xc3\xa9"]], dtype=np.object_)
    outputs = runtime.infer({"IMAGE": images, "CAPTION": captions})
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((images / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    assert outputs["NORMALIZED"].shape == (2, 3, 4, 4)
    np.testing.assert_allclose(outputs["NORMALIZED"], expected, rtol=1e-5)
    assert outputs["CAPTION"].tolist() == [[b"A CAT"], ["CAFÉ".encode()]]


def test_execute_raising_fails_the_call_naming_the_model(loaded: Callable[..., PythonRuntime]) -> None:
    runtime = loaded("raises", RAISES, _one_tensor("raises"))
    with pytest.raises(InferenceFailed, match=r"model 'raises' version 1: execute raised ValueError: .*no row 7"):
        runtime.infer({"X": np.zeros(1, np.float32)})


def test_an_error_response_fails_that_request(loaded: Callable[..., PythonRuntime]) -> None:
    runtime = loaded("refuses", REFUSES_NEGATIVE, _one_tensor("refuses"))
    with pytest.raises(InferenceFailed, match=r"model 'refuses' version 1: X must not be negative"):
        runtime.infer({"X": np.array([-1.0], np.float32)})
    assert runtime.infer({"X": np.array([1.0], np.float32)})["Y"].tolist() == [1.0]


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        ("[]", InferenceFailed, "execute returned 0 responses for 1 request"),
        ("None", InferenceFailed, "execute returned NoneType responses for 1 request"),
        ("['Y']", InferenceFailed, "execute returned a str, not an InferenceResponse"),
        ("[pb_utils.InferenceResponse([])]", InferenceFailed, "gave no output 'Y'; it gave none"),
        (
            "[pb_utils.InferenceResponse([pb_utils.Tensor('Y', np.zeros(1))])]",
            InferenceFailed,
            "output 'Y' has numpy dtype float64; config.yaml declares FP32",
        ),
        (
            "[pb_utils.InferenceResponse(error=pb_utils.TritonError('bad X', pb_utils.TritonError.INVALID_ARG))]",
            InvalidInput,
            "model 'odd' version 1: bad X",
        ),
    ],
    ids=["none", "not-a-list", "not-a-response", "no-output", "wrong-dtype", "invalid-arg"],
)
def test_answers_that_cannot_be_served_say_why(
    loaded: Callable[..., PythonRuntime], answer: str, error: type[Exception], message: str
) -> None:
    source = f"""import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return {answer}
"""
    runtime = loaded("odd", source, _one_tensor("odd"))
    with pytest.raises(error, match=message):
        runtime.infer({"X": np.zeros(1, np.float32)})


def test_async_execute_runs(loaded: Callable[..., PythonRuntime]) -> None:
    source = """import asyncio
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.sleep(0)
        x = pb_utils.get_input_tensor_by_name(requests[0], "X").as_numpy()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)])]
"""
    runtime = loaded("waits", source, _one_tensor("waits"))
    for value in (1.0, 2.0):  # the instance's event loop serves every call
        assert runtime.infer({"X": np.array([value], np.float32)})["Y"].tolist() == [value + 1]


def test_bls_outside_a_server_is_refused(loaded: Callable[..., PythonRuntime]) -> None:
    source = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        pb_utils.InferenceRequest(model_name="other", inputs=requests[0].inputs()).exec()
"""
    runtime = loaded("lonely", source, _one_tensor("lonely"))
    with pytest.raises(InferenceFailed, match=r"BLS requests are made inside execute .* of a model the server runs"):
        runtime.infer({"X": np.zeros(1, np.float32)})


# -- pb_utils ------------------------------------------------------------------------------------------


def test_tensor_types_and_dlpack() -> None:
    assert pb_utils.triton_to_numpy_type(11) is np.float32
    assert pb_utils.triton_to_numpy_type(13) is np.object_
    assert pb_utils.numpy_to_triton_type(np.int64) == 9
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.numpy_to_triton_type(np.complex64) is None
    tensor = pb_utils.Tensor("X", A)
    assert tensor.as_numpy() is A  # no copy
    assert (tensor.name(), tensor.shape(), tensor.is_cpu()) == ("X", [4], True)
    from_torch = pb_utils.Tensor.from_dlpack("Y", torch.from_numpy(A))
    assert np.shares_memory(from_torch.as_numpy(), A)
    to_torch = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
    assert to_torch.data_ptr() == A.ctypes.data
    response = pb_utils.InferenceResponse([tensor], parameters={"k": 1})
    assert pb_utils.get_output_tensor_by_name(response, "X") is tensor
    assert pb_utils.get_output_tensor_by_name(response, "Z") is None
    assert json.loads(response.parameters()) == {"k": 1}
    request = pb_utils.InferenceRequest(model_name=b"add_sub", inputs=[tensor], requested_output_names=["OUTPUT0"])
    assert request.model_name == "add_sub"
    assert pb_utils.get_input_tensor_by_name(request, "X") is tensor
    assert request.requested_output_names() == ["OUTPUT0"]


# -- through a model manager: BLS ----------------------------------------------------------------------

Manager = Callable[..., ModelManager]


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[Manager]:
    """Builds a manager over ``tmp_path / 'repository'`` on a shared pool of ``threads`` threads."""
    made: list[tuple[ModelManager, ThreadPoolExecutor]] = []

    def make(*, threads: int = 2, inline_below_us: float = 0.0, request_timeout_s: float = 30.0) -> ModelManager:
        executor = ThreadPoolExecutor(threads, thread_name_prefix="test-inference")
        manager = ModelManager(
            ModelRepository(tmp_path / "repository"),
            executor,
            defaults=BatchingDefaults(max_batch_size=8, inline_below_us=inline_below_us),
            load_timeout_s=30.0,
            request_timeout_s=request_timeout_s,
            control_enabled=True,
        )
        made.append((manager, executor))
        return manager

    yield make
    for manager, executor in made:
        await asyncio.wait_for(manager.close(), 30)
        executor.shutdown(wait=True)


def _add_sub_request(model: str, **extra: np.ndarray) -> InferenceRequest:
    return InferenceRequest(model, {"INPUT0": A, "INPUT1": B, **extra})


def _name(model: str) -> np.ndarray:
    return np.array([model.encode()], dtype=np.object_)


async def test_bls_examples_call_python_and_onnx_models(tmp_path: Path, manager: Manager) -> None:
    write_bls_repository(tmp_path / "repository")
    models = manager()
    await models.start(["*"])
    for target in ("add_sub", "pytorch"):  # the Python example, the ONNX model
        answer = await models.infer(_add_sub_request("bls_sync", MODEL_NAME=_name(target)))
        np.testing.assert_array_equal(answer.outputs["OUTPUT0"], A + B)
        np.testing.assert_array_equal(answer.outputs["OUTPUT1"], A - B)
    answer = await models.infer(_add_sub_request("bls_async"))  # both at once, through async_exec
    np.testing.assert_array_equal(answer.outputs["OUTPUT0"], A + B)
    np.testing.assert_array_equal(answer.outputs["OUTPUT1"], A - B)
    # The inner requests went through the other models' batchers, and count in their statistics.
    served = {record.name: record.stats.success.count for record in models.ready()}
    assert served == {"add_sub": 2, "pytorch": 2, "bls_sync": 2, "bls_async": 1}


async def test_a_bls_request_that_fails_is_the_responses_error(tmp_path: Path, manager: Manager) -> None:
    write_bls_repository(tmp_path / "repository")
    models = manager()
    await models.start(["*"])
    with pytest.raises(InferenceFailed) as failed:
        await models.infer(_add_sub_request("bls_sync", MODEL_NAME=_name("missing")))
    # The example raises TritonModelException with the error the response carried: the server's 404 text.
    assert "model 'bls_sync' version 1: execute raised TritonModelException" in failed.value.message
    assert ModelNotFound.unknown("missing").message.split(";")[0] in failed.value.message


async def test_bls_waits_for_models_on_a_busy_shared_pool(tmp_path: Path, manager: Manager) -> None:
    """One shared inference thread, and two BLS calls at once into an ONNX model that needs it: a Python
    model runs on threads of its own, so its waiting never holds the thread the ONNX batches need."""
    repository = tmp_path / "repository"
    write_bls_repository(repository)
    (repository / "bls_sync" / "config.yaml").write_text(
        (repository / "bls_sync" / "config.yaml").read_text() + "instance_count: 2\n"
    )
    models = manager(threads=1, request_timeout_s=10.0)
    await models.start(["bls_sync", "pytorch"])
    answers = await asyncio.gather(
        *(models.infer(_add_sub_request("bls_sync", MODEL_NAME=_name("pytorch"))) for _ in range(4))
    )
    for answer in answers:
        np.testing.assert_array_equal(answer.outputs["OUTPUT0"], A + B)


async def test_a_python_model_never_runs_on_the_event_loop(tmp_path: Path, manager: Manager) -> None:
    """Even where the server would run a model this fast inline on the loop (INLINE_INFERENCE_US)."""
    repository = tmp_path / "repository"
    write_python_model(repository, "quick", SLEEPS, sleeps_config(0.0, 2) + "name: quick\n")
    models = manager(inline_below_us=1e9)
    await models.start(["quick"])
    for _ in range(5):
        await models.infer(InferenceRequest("quick", {"X": np.ones(1, np.float32)}))
    threads = _module("quick").threads
    assert len(threads) == 5
    assert all(name.startswith("python:quick") for name in threads), threads

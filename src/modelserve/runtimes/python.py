"""Triton Python models: ``<version>/model.py`` defining ``TritonPythonModel``, run unchanged.

Each load imports model.py afresh as a module of its own (two models' model.py never share globals) and
makes ``instance_count`` TritonPythonModel objects, each ``initialize``-d with Triton's ``args``. A call
lends one object to one batch: its ``execute`` gets one ``pb_utils.InferenceRequest`` holding the batch
the batcher formed, and must answer one ``InferenceResponse``. ``finalize`` runs at unload.

The model runs on threads of its own, ``instance_count`` of them, never on the event loop nor on the
shared inference threads: its ``execute`` may block on BLS requests, which wait for the loop and for the
models they call, and those models' batches need the inference threads. A model that hangs holds its own
threads only. The threads share one GIL: instances run in parallel only where execute releases it (numpy
on large arrays, I/O, sleeping, another runtime); pure-Python work runs one instance at a time.

The model's signature is config.yaml's: a model.py declares no tensors, so config.yaml must.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import re
import sys
import types
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import InferenceFailed, InvalidInput, ModelLoadError
from modelserve.repository.config import ModelConfig, TensorConfig
from modelserve.runtimes import pb_utils
from modelserve.runtimes.base import Arrays, Runtime
from modelserve.runtimes.instances import InstancePool
from modelserve.runtimes.pb_utils import ModelCalls
from modelserve.types import numpy_dtype

log = logging.getLogger("modelserve.python")

_IMPORTS = itertools.count()  # module names are never reused, even by a reload of the same version
_IDENTIFIER = re.compile(r"\W")  # what a model name may hold that a module name may not ('.', '-')


@dataclass(slots=True)
class _Instance:
    """One TritonPythonModel, and the event loop of its ``async def execute`` once it has one."""

    model: Any
    loop: asyncio.AbstractEventLoop | None = None

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> Any:
        """The model's ``execute``; an ``async def`` one runs to completion on this instance's loop."""
        result = self.model.execute(requests)
        if inspect.isawaitable(result):
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            result = self.loop.run_until_complete(result)
        return result

    def finalize(self, where: str) -> None:
        """The model's ``finalize``, if it has one: a failure is logged, never raised, as the model goes anyway."""
        try:
            if (finalize := getattr(self.model, "finalize", None)) is not None:
                finalize()
        except Exception:  # whatever the user's code raises
            log.exception("%s: finalize raised", where)
        finally:
            if self.loop is not None:
                self.loop.close()


class PythonRuntime(Runtime):
    """A Triton Python model. ``calls`` is set by the loader before ``load``: where BLS requests go."""

    calls: ModelCalls | None = None
    _module: str | None = None
    _executor: ThreadPoolExecutor | None = None
    _pool: InstancePool[_Instance] | None = None

    def __init__(self, path: Path, config: ModelConfig) -> None:
        super().__init__(path, config)
        self._name, self._version = path.parent.parent.name, int(path.parent.name)
        self._outputs = {t.name: t.datatype for t in config.outputs}
        self._started: list[_Instance] = []  # initialised, to be finalised at unload

    def load(self) -> None:
        if not self.path.exists():
            raise ModelLoadError(f"model file not found: {self.path}")
        config = self.config
        absent = [kind for kind, tensors in (("inputs", config.inputs), ("outputs", config.outputs)) if not tensors]
        if absent:
            raise ModelLoadError(
                f"{self.path.parent.parent / 'config.yaml'}: a Python model needs its {' and '.join(absent)} "
                "declared in config.yaml (name, datatype, dims): model.py declares no tensors"
            )
        model_class = getattr(self._import(), "TritonPythonModel", None)
        if not isinstance(model_class, type):
            raise ModelLoadError(f"{self.path}: defines no class TritonPythonModel")
        for index in range(config.instance_count):
            self._started.append(_Instance(self._initialize(model_class, index)))
        instances = iter(self._started)
        self._pool = InstancePool(lambda: next(instances), config.instance_count)
        self._executor = ThreadPoolExecutor(config.instance_count, thread_name_prefix=f"python:{self._name}")

    def _import(self) -> types.ModuleType:
        """model.py as a new module, compiled from its text: nothing is written beside it (__pycache__)."""
        name = f"modelserve_python_model_{_IDENTIFIER.sub('_', self._name)}_{self._version}_{next(_IMPORTS)}"
        module = types.ModuleType(name)
        module.__file__ = str(self.path)
        sys.modules[name] = module  # dataclasses, pickle and typing look their module up there
        self._module = name
        try:
            exec(compile(self.path.read_bytes(), str(self.path), "exec"), module.__dict__)
        except Exception as exc:  # whatever importing the user's code raises, syntax errors included
            raise ModelLoadError(f"{self.path}: importing it raised {type(exc).__name__}: {exc}") from exc
        return module

    def _initialize(self, model_class: type, index: int) -> Any:
        where = f"{self.path}: TritonPythonModel"
        try:
            model = model_class()
        except Exception as exc:
            raise ModelLoadError(f"{where}() raised {type(exc).__name__}: {exc}") from exc
        if not callable(getattr(model, "execute", None)):
            raise ModelLoadError(f"{where} has no execute method")
        if (initialize := getattr(model, "initialize", None)) is not None:
            try:
                initialize(self._args(index))
            except Exception as exc:
                raise ModelLoadError(f"{where}.initialize raised {type(exc).__name__}: {exc}") from exc
        return model

    def _args(self, index: int) -> dict[str, str]:
        """Triton's ``args`` of ``initialize``: every key and value a string."""
        return {
            "model_config": json.dumps(triton_config(self._name, self.config)),
            "model_instance_kind": "CPU",
            "model_instance_name": f"{self._name}_0_{index}",
            "model_instance_device_id": "0",
            "model_repository": str(self.path.parent.parent),
            "model_version": str(self._version),
            "model_name": self._name,
        }

    @property
    def executor(self) -> Executor:
        """The model's own threads, one per instance: where its batches run."""
        assert self._executor is not None, "executor asked for before load"
        return self._executor

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        assert self._pool is not None, "infer called before load"
        request = pb_utils.InferenceRequest(
            self._name,
            [pb_utils.Tensor(name, array) for name, array in inputs.items()],
            list(self._outputs),
            self._version,
        )
        with self._pool.lend() as instance, pb_utils.calls_from(self.calls):
            try:
                responses = instance.execute([request])
            except Exception as exc:  # the model's own failure, whatever it raised
                log.warning("model %s version %s: execute raised", self._name, self._version, exc_info=True)
                raise InferenceFailed(
                    f"model '{self._name}' version {self._version}: execute raised {type(exc).__name__}: {exc}"
                ) from None
        return self._answer(responses)

    def _answer(self, responses: Any) -> dict[str, np.ndarray[Any, Any]]:
        """The outputs of the one response ``execute`` must return, or why they cannot be served."""
        model = f"model '{self._name}' version {self._version}"
        if not isinstance(responses, list | tuple) or len(responses) != 1:
            count = len(responses) if isinstance(responses, list | tuple) else type(responses).__name__
            raise InferenceFailed(f"{model}: execute returned {count} responses for 1 request; return one per request")
        response = responses[0]
        if not isinstance(response, pb_utils.InferenceResponse):
            raise InferenceFailed(f"{model}: execute returned a {type(response).__name__}, not an InferenceResponse")
        if (error := response.error()) is not None:
            if error.code() == pb_utils.TritonError.INVALID_ARG:
                raise InvalidInput(f"{model}: {error.message()}")
            raise InferenceFailed(f"{model}: {error.message()}")
        given = {tensor.name(): tensor.as_numpy() for tensor in response.output_tensors()}
        outputs = {}
        for name, datatype in self._outputs.items():
            array = given.get(name)
            if array is None:
                raise InferenceFailed(f"{model} gave no output '{name}'; it gave {', '.join(given) or 'none'}")
            if array.dtype != numpy_dtype(datatype) and not (datatype == "BYTES" and array.dtype.kind in "OSU"):
                raise InferenceFailed(
                    f"{model}: output '{name}' has numpy dtype {array.dtype}; config.yaml declares {datatype}"
                )
            outputs[name] = array
        return outputs

    def memory_bytes(self) -> int:
        # What the model allocates is its own business; the loader's measure of the process sees it.
        return self.path.stat().st_size if self._pool is not None else 0

    def unload(self) -> None:
        for instance in self._started:
            with pb_utils.calls_from(None):
                instance.finalize(str(self.path))
        self._started, self._pool = [], None
        if self._executor is not None:
            # A call still under way (a hung execute) keeps its thread; nothing waits for it here.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._module is not None:
            sys.modules.pop(self._module, None)
            self._module = None


def triton_config(name: str, config: ModelConfig) -> dict[str, Any]:
    """config.yaml as Triton's JSON model configuration: what ``args["model_config"]`` holds."""
    document: dict[str, Any] = {
        "name": name,
        "platform": "",
        "backend": "python",
        "max_batch_size": config.max_batch_size or 0,
        "input": [_tensor(t) for t in config.inputs],
        "output": [_tensor(t) for t in config.outputs],
        "instance_group": [{"name": f"{name}_0", "kind": "KIND_CPU", "count": config.instance_count, "gpus": []}],
        "parameters": {key: {"string_value": str(value)} for key, value in config.parameters.items()},
        "model_transaction_policy": {"decoupled": False},
    }
    if (batching := config.dynamic_batching) is not None:
        document["dynamic_batching"] = {
            "preferred_batch_size": batching.preferred_batch_sizes,
            "max_queue_delay_microseconds": round((batching.max_queue_delay_ms or 0) * 1000),
        }
    return document


def _tensor(tensor: TensorConfig) -> dict[str, Any]:
    datatype = "STRING" if tensor.datatype == "BYTES" else tensor.datatype
    return {"name": tensor.name, "data_type": f"TYPE_{datatype}", "dims": list(tensor.dims)}

"""The ModelManager with real repositories, real model files and real runtimes.

Managers are built the way ``server/app.py`` builds them. Models whose version must be told apart
are ``y = x * factor`` ONNX files whose factor is their version number, so a result names the
version that produced it.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pytest

from modelserve.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelControlDisabled,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
)
from modelserve.models.manager import ModelManager
from modelserve.models.records import ModelState, ModelVersion
from modelserve.types import InferenceRequest
from tests.builders import broken_repository, reference_inputs, scale_onnx, write_config
from tests.models.conftest import Factory
from tests.waiting import until

EXAMPLES = ("iris", "mlp", "simple", "tiny_cnn")


@dataclass
class Recorder:
    """A ManagerObserver that keeps what it was told."""

    batches: list[tuple[str, int]] = field(default_factory=list)
    loads: list[tuple[str, float, bool]] = field(default_factory=list)
    evictions: list[tuple[str, str]] = field(default_factory=list)
    cold_starts: list[str] = field(default_factory=list)
    abandoned: list[tuple[str, str]] = field(default_factory=list)
    cache_lookups: list[tuple[str, bool]] = field(default_factory=list)

    def observe_batch(self, model: str, samples: int, compute_s: float, queued_s: list[float]) -> None:
        self.batches.append((model, samples))

    def observe_load(self, model: str, seconds: float, ok: bool) -> None:
        self.loads.append((model, seconds, ok))

    def observe_eviction(self, model: str, reason: str) -> None:
        self.evictions.append((model, reason))

    def observe_cold_start(self, model: str) -> None:
        self.cold_starts.append(model)

    def observe_abandoned(self, model: str, reason: str) -> None:
        self.abandoned.append((model, reason))

    def observe_cache(self, model: str, hit: bool) -> None:
        self.cache_lookups.append((model, hit))


def scaled_versions(repo: Path, versions: tuple[int, ...], *, config: str | None = None) -> Path:
    """A model ``scaled`` whose version N computes ``y = N * x`` on FP32 [-1, 4]."""
    directory = repo / "scaled"
    for version in versions:
        scale_onnx(directory / str(version) / "model.onnx", factor=float(version))
    if config is not None:
        write_config(directory, config)
    return directory


async def factor_of(manager: ModelManager, version: int | None = None) -> int:
    """Which version of ``scaled`` answered, read from its result."""
    response = await manager.infer(InferenceRequest("scaled", {"x": np.ones((1, 4), np.float32)}, version=version))
    factor = float(response.outputs["y"][0, 0])
    assert response.version == factor, "the response names another version than the one that ran"
    return int(factor)


def simple_request(seed: int = 0, **fields: Any) -> InferenceRequest:
    """A request for ``simple`` with two samples; ``fields`` are InferenceRequest's optional ones."""
    a = reference_inputs(seed)["simple"]
    return InferenceRequest("simple", {"INPUT0": a, "INPUT1": a[::-1].copy()}, **fields)


def states(versions: list[ModelVersion]) -> dict[tuple[str, int | None], ModelState]:
    """Each (model, version) with its state."""
    return {(v.name, v.version): v.state for v in versions}


@asynccontextmanager
async def busy(executor: ThreadPoolExecutor, threads: int = 2) -> AsyncIterator[threading.Event]:
    """Hold every thread of the inference pool (the conftest's has 2) until the yielded gate is set."""
    gate, entered = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        entered.release()
        gate.wait(30)

    held = [executor.submit(hold) for _ in range(threads)]
    try:
        for _ in range(threads):
            assert await asyncio.to_thread(entered.acquire, True, 10), "the pool did not start the holding task"
        yield gate
    finally:
        gate.set()
        await asyncio.gather(*(asyncio.wrap_future(f) for f in held))


@contextmanager
def torch_jit_quietly() -> Iterator[None]:
    # torch deprecates TorchScript; warnings are errors here, and the reference load is ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@dataclass
class LoadGate:
    """Holds the loading of a gated model file: counts the loads and blocks each until ``opened``."""

    opened: threading.Event = field(default_factory=threading.Event)
    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    loads: int = 0
    broken: bool = False  # give the runtime something without ``predict``, so the load fails

    async def loading(self) -> None:
        """Wait until a load has begun reading the file (it stays held until ``opened`` is set)."""
        assert await asyncio.to_thread(self.entered.acquire, True, 10), "the model file was never read"


_LOAD_GATES: dict[str, LoadGate] = {}


def _read_gated_estimator(token: str, estimator_file: str) -> Any:
    """Run by unpickling a gated model file: count the load, wait for the gate, then give the real estimator."""
    gate = _LOAD_GATES[token]
    gate.loads += 1
    gate.entered.release()
    if not gate.opened.wait(30):
        raise RuntimeError("the test never opened the load gate")
    return "not an estimator" if gate.broken else joblib.load(estimator_file)


class _GatedModelFile:
    """Pickles as a call of ``_read_gated_estimator``: a real joblib file whose loading the test controls."""

    def __init__(self, token: str, estimator_file: Path) -> None:
        self.token, self.estimator_file = token, str(estimator_file)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_read_gated_estimator, (self.token, self.estimator_file))


@pytest.fixture
def gated_model(make_manager: Factory, built_repository: Path) -> Iterator[Callable[[Path], LoadGate]]:
    """Writes ``<repo>/gated/1/model.joblib``: the example iris classifier, loading only once its gate opens.

    Depends on ``make_manager`` so that its teardown (opening every gate) runs before managers close.
    """
    made: list[str] = []

    def make(repo: Path) -> LoadGate:
        token = str(repo / "gated")
        _LOAD_GATES[token] = gate = LoadGate()
        made.append(token)
        target = repo / "gated" / "1" / "model.joblib"
        target.parent.mkdir(parents=True)
        joblib.dump(_GatedModelFile(token, built_repository / "iris" / "1" / "model.joblib"), target)
        return gate

    yield make
    for token in made:
        _LOAD_GATES.pop(token).opened.set()


# -- startup and serving -----------------------------------------------------------------------------


async def test_start_star_loads_every_example_model_ready(make_manager: Factory, built_repository: Path) -> None:
    manager = make_manager(built_repository)
    await manager.start(["*"])

    assert states(await manager.index()) == {(name, 1): ModelState.READY for name in EXAMPLES}
    assert sorted(r.name for r in manager.ready()) == list(EXAMPLES)
    for record in manager.ready():
        assert record.reason == ""
        assert record.load_seconds > 0
        assert record.memory_bytes > 0

    import torch

    image = reference_inputs()["tiny_cnn"]
    response = await manager.infer(InferenceRequest("tiny_cnn", {"image": image}))
    with torch_jit_quietly():
        module = torch.jit.load(str(built_repository / "tiny_cnn" / "1" / "model.pt"))
    with torch.inference_mode():
        logits, probabilities = module(torch.from_numpy(image))
    np.testing.assert_allclose(response.outputs["logits"], logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(response.outputs["probabilities"], probabilities.numpy(), rtol=1e-5, atol=1e-6)


async def test_infer_gives_what_the_model_files_give_when_run_directly(
    make_manager: Factory, built_repository: Path
) -> None:
    manager = make_manager(built_repository)
    await manager.start(["mlp", "simple", "iris"])
    inputs = reference_inputs()

    mlp = await manager.infer(InferenceRequest("mlp", {"input": inputs["mlp"]}, id="req-1"))
    session = ort.InferenceSession(
        str(built_repository / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(["output"], {"input": inputs["mlp"]})
    assert (mlp.model, mlp.version, mlp.id) == ("mlp", 1, "req-1")
    assert list(mlp.outputs) == ["output"]
    np.testing.assert_allclose(mlp.outputs["output"], expected, rtol=1e-5, atol=1e-6)

    request = simple_request()
    simple = await manager.infer(request)
    a, b = request.inputs["INPUT0"], request.inputs["INPUT1"]
    assert list(simple.outputs) == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(simple.outputs["OUTPUT0"], a + b)
    np.testing.assert_array_equal(simple.outputs["OUTPUT1"], a - b)
    assert simple.outputs["OUTPUT0"].dtype == np.int32

    iris = await manager.infer(InferenceRequest("iris", {"input": inputs["iris"]}))
    estimator = joblib.load(built_repository / "iris" / "1" / "model.joblib")
    np.testing.assert_array_equal(iris.outputs["predict"], estimator.predict(inputs["iris"]))
    np.testing.assert_allclose(iris.outputs["predict_proba"], estimator.predict_proba(inputs["iris"]), rtol=1e-12)


async def test_a_request_gets_only_the_outputs_it_names(make_manager: Factory, built_repository: Path) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple"])
    request = simple_request(outputs=["OUTPUT1"])

    response = await manager.infer(request)

    assert list(response.outputs) == ["OUTPUT1"]
    np.testing.assert_array_equal(response.outputs["OUTPUT1"], request.inputs["INPUT0"] - request.inputs["INPUT1"])
    with pytest.raises(InvalidInput, match="model 'simple' has no output 'OUTPUT9'"):
        await manager.infer(simple_request(outputs=["OUTPUT9"]))


async def test_a_request_may_name_the_version(make_manager: Factory, built_repository: Path) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple"])

    response = await manager.infer(simple_request(version=1))

    assert response.version == 1
    assert manager.get("simple", 1) is manager.get("simple")


async def test_an_unknown_model_is_not_found(make_manager: Factory, built_repository: Path) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple"])

    with pytest.raises(
        ModelNotFound, match=r"^Request for unknown model: 'nope' is not found; it is not in the model repository"
    ):
        await manager.infer(InferenceRequest("nope", {"x": np.ones((1, 4), np.float32)}))
    with pytest.raises(
        ModelNotFound, match=r"^Request for unknown model: 'nope' is not found; it is not in the model repository"
    ):
        await manager.load("nope")
    with pytest.raises(
        ModelNotFound, match=r"^Request for unknown model: 'nope' is not found; it is not in the model repository"
    ):
        await manager.unload("nope")
    assert "nope" not in {v.name for v in await manager.index()}


async def test_a_model_in_the_repository_but_not_loaded_is_not_ready_and_says_how_to_load_it(
    make_manager: Factory, built_repository: Path
) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple"])

    with pytest.raises(ModelNotReady, match="model 'iris' is not loaded; load it with POST") as refused:
        await manager.infer(InferenceRequest("iris", {"input": reference_inputs()["iris"]}))
    assert "/v2/repository/models/iris/load" in refused.value.message
    assert await manager.versions("iris") == []


async def test_an_unknown_version_is_not_found_and_the_served_versions_are_listed(
    make_manager: Factory, tmp_path: Path
) -> None:
    scaled_versions(tmp_path, (1, 2, 3), config="version_policy: {specific: [1, 3]}\n")
    manager = make_manager(tmp_path)
    await manager.start(["scaled"])

    with pytest.raises(
        ModelNotFound, match=r"^Request for unknown model: 'scaled' version 2 is not found; versions served: 1, 3"
    ):
        await factor_of(manager, version=2)
    with pytest.raises(ModelNotFound, match="versions served: 1, 3"):
        await factor_of(manager, version=7)


# -- version policy and reloads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "served"),
    [
        (None, [3]),
        ("version_policy: {latest: 1}\n", [3]),
        ("version_policy: {latest: 2}\n", [2, 3]),
        ("version_policy: all\n", [1, 2, 3]),
        ("version_policy: {specific: [1, 3]}\n", [1, 3]),
        ("version_policy: {specific: {versions: [2]}}\n", [2]),
    ],
)
async def test_the_version_policy_picks_the_versions_served(
    make_manager: Factory, tmp_path: Path, config: str | None, served: list[int]
) -> None:
    scaled_versions(tmp_path, (1, 2, 3), config=config)
    manager = make_manager(tmp_path)
    await manager.start(["scaled"])

    assert [v.version for v in await manager.versions("scaled")] == served
    assert all(v.state is ModelState.READY for v in await manager.versions("scaled"))
    for version in served:
        assert await factor_of(manager, version) == version
    assert await factor_of(manager) == max(served), "a request naming no version goes to the newest"
    for version in {1, 2, 3} - set(served):
        with pytest.raises(ModelNotFound, match=rf"^Request for unknown model: '.*' version {version} is not found"):
            await factor_of(manager, version)


async def test_a_reload_serves_a_new_version_and_retires_the_one_no_longer_selected(
    make_manager: Factory, tmp_path: Path
) -> None:
    scaled_versions(tmp_path, (1, 2))
    manager = make_manager(tmp_path)
    await manager.start(["scaled"])
    old = manager.get("scaled")
    assert await factor_of(manager) == 2

    scaled_versions(tmp_path, (3,))
    served = await manager.load("scaled")

    assert [v.version for v in served] == [3]
    assert await factor_of(manager) == 3
    assert (old.state, old.reason) == (ModelState.UNAVAILABLE, "unloaded")
    assert old.runtime is None
    with pytest.raises(ModelNotFound, match="versions served: 3"):
        await factor_of(manager, version=2)


async def test_a_reload_keeps_loaded_versions_that_stay_selected(make_manager: Factory, tmp_path: Path) -> None:
    scaled_versions(tmp_path, (1, 2), config="version_policy: all\n")
    manager = make_manager(tmp_path)
    await manager.start(["scaled"])
    before = {v.version: v for v in manager.records("scaled")}

    scaled_versions(tmp_path, (3,))
    served = await manager.load("scaled")

    assert [v.version for v in served] == [1, 2, 3]
    # Versions 1 and 2 kept serving throughout: the very same records, never reloaded.
    assert served[0] is before[1]
    assert served[1] is before[2]
    assert [await factor_of(manager, v) for v in (1, 2, 3)] == [1, 2, 3]


async def test_concurrent_loads_of_one_model_share_a_single_load(
    make_manager: Factory, gated_model: Callable[[Path], LoadGate], example_repository: Path
) -> None:
    gate = gated_model(example_repository)
    manager = make_manager(example_repository)

    loads = [asyncio.create_task(manager.load("gated")) for _ in range(5)]
    await gate.loading()
    [loading] = manager.records("gated")
    assert loading.state is ModelState.LOADING
    gate.opened.set()
    results = await asyncio.gather(*loads)

    assert gate.loads == 1, "the model file was read once for all five callers"
    # Each load builds the list it returns, so one list object means one load answered them all.
    assert all(result is results[0] for result in results)
    assert results[0] == [loading]
    assert loading.state is ModelState.READY
    response = await manager.infer(InferenceRequest("gated", {"input": reference_inputs()["iris"]}))
    assert response.outputs["predict_proba"].shape == (2, 3)


async def test_concurrent_loads_of_a_failing_model_share_a_single_attempt(
    make_manager: Factory, gated_model: Callable[[Path], LoadGate], example_repository: Path
) -> None:
    gate = gated_model(example_repository)
    gate.broken = True
    manager = make_manager(example_repository)

    loads = [asyncio.create_task(manager.load("gated")) for _ in range(5)]
    await gate.loading()
    gate.opened.set()
    errors = await asyncio.gather(*loads, return_exceptions=True)

    # Loads one after another would each retry the FAILED version and read the file again.
    assert gate.loads == 1
    assert all(isinstance(error, ModelLoadError) for error in errors)
    assert all(error is errors[0] for error in errors)
    assert "str has no predict method" in str(errors[0])
    [record] = manager.records("gated")
    assert record.state is ModelState.FAILED


async def test_a_caller_giving_up_does_not_cancel_the_load_others_wait_for(
    make_manager: Factory, gated_model: Callable[[Path], LoadGate], example_repository: Path
) -> None:
    gate = gated_model(example_repository)
    manager = make_manager(example_repository)
    impatient = asyncio.create_task(manager.load("gated"))
    patient = asyncio.create_task(manager.load("gated"))
    await gate.loading()

    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    gate.opened.set()
    [record] = await patient

    assert record.state is ModelState.READY
    assert gate.loads == 1
    response = await manager.infer(InferenceRequest("gated", {"input": reference_inputs()["iris"]}))
    assert response.outputs["predict"].shape == (2,)


async def test_a_loading_model_is_not_ready_and_others_keep_serving_meanwhile(
    make_manager: Factory, gated_model: Callable[[Path], LoadGate], example_repository: Path
) -> None:
    gate = gated_model(example_repository)
    manager = make_manager(example_repository)
    await manager.start(["simple"])

    loading = asyncio.create_task(manager.load("gated"))
    await gate.loading()
    with pytest.raises(ModelNotReady, match="model 'gated' version 1 is loading"):
        manager.get("gated")
    assert {v.name: v.state for v in await manager.index()}["gated"] is ModelState.LOADING
    # Loading runs on its own thread: inference goes on while the load is held.
    assert (await manager.infer(simple_request())).version == 1
    gate.opened.set()
    await loading

    assert manager.get("gated").state is ModelState.READY


async def test_unload_stops_serving_and_the_index_says_unloaded(make_manager: Factory, built_repository: Path) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple", "mlp"])
    record = manager.get("simple")

    await manager.unload("simple")

    with pytest.raises(ModelNotReady, match="model 'simple'"):
        await manager.infer(simple_request())
    assert (record.state, record.reason, record.runtime, record.batcher) == (
        ModelState.UNAVAILABLE,
        "unloaded",
        None,
        None,
    )
    [entry] = [v for v in await manager.index() if v.name == "simple"]
    assert (entry.version, entry.state, entry.reason) == (1, ModelState.UNAVAILABLE, "unloaded")
    assert [r.name for r in manager.ready()] == ["mlp"]
    # Unloaded is not gone: it loads again on request.
    await manager.load("simple")
    assert (await manager.infer(simple_request())).version == 1


async def test_without_model_control_load_and_unload_are_refused(make_manager: Factory, built_repository: Path) -> None:
    manager = make_manager(built_repository, control_enabled=False)
    await manager.start(["simple"])

    with pytest.raises(ModelControlDisabled, match="--model-control-mode explicit"):
        await manager.load("mlp")
    with pytest.raises(ModelControlDisabled, match="--model-control-mode explicit"):
        await manager.unload("simple")
    # The startup load still happened, and the refused calls changed nothing.
    assert [r.name for r in manager.ready()] == ["simple"]
    assert await manager.versions("mlp") == []


# -- failures ----------------------------------------------------------------------------------------


async def test_broken_models_fail_with_the_file_and_problem_while_good_ones_serve(
    make_manager: Factory, built_repository: Path, tmp_path: Path
) -> None:
    root = broken_repository(tmp_path / "broken", built_repository)
    observer = Recorder()
    manager = make_manager(root, observer=observer)
    await manager.start(["*"])

    outcomes = {name: ok for name, _, ok in observer.loads}
    assert outcomes == {
        **dict.fromkeys(EXAMPLES, True),
        **dict.fromkeys(("bad_yaml", "unknown_field", "corrupt", "wrong_dims"), False),
    }
    assert all(seconds > 0 for name, seconds, ok in observer.loads if ok)
    index = {v.name: v for v in await manager.index()}
    for name in EXAMPLES:
        assert (index[name].state, index[name].version) == (ModelState.READY, 1)
    expected = {
        "bad_yaml": (None, [str(root / "bad_yaml" / "config.yaml"), "invalid YAML"]),
        "unknown_field": (None, [str(root / "unknown_field" / "config.yaml"), "max_batch_sise: unknown field"]),
        "corrupt": (1, [str(root / "corrupt" / "1" / "model.onnx"), "not a loadable ONNX model"]),
        "wrong_dims": (1, [str(root / "wrong_dims" / "config.yaml"), "contradicts", "model.onnx", "[-1, 5]"]),
    }
    for name, (version, fragments) in expected.items():
        record = index[name]
        assert (record.state, record.version) == (ModelState.FAILED, version), name
        for fragment in fragments:
            assert fragment in record.reason, f"{name}: {fragment!r} not in {record.reason!r}"
        with pytest.raises(ModelNotReady, match=f"model '{name}'.* failed to load: "):
            manager.get(name)

    inputs = reference_inputs()
    assert (await manager.infer(InferenceRequest("mlp", {"input": inputs["mlp"]}))).outputs["output"].shape == (3, 4)
    assert (await manager.infer(InferenceRequest("iris", {"input": inputs["iris"]}))).outputs["predict"].shape == (2,)
    assert (await manager.infer(InferenceRequest("tiny_cnn", {"image": inputs["tiny_cnn"]}))).version == 1
    assert (await manager.infer(simple_request())).version == 1


async def test_naming_a_missing_model_at_startup_records_it_failed(
    make_manager: Factory, built_repository: Path
) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple", "nope"])

    index = {v.name: v for v in await manager.index()}
    assert index["simple"].state is ModelState.READY
    assert index["nope"].state is ModelState.FAILED
    assert "Request for unknown model: 'nope' is not found" in index["nope"].reason


async def test_a_failed_reload_of_the_config_keeps_the_ready_version_serving(
    make_manager: Factory, tmp_path: Path
) -> None:
    scaled_versions(tmp_path, (1,))
    manager = make_manager(tmp_path)
    await manager.start(["scaled"])
    record = manager.get("scaled")

    write_config(tmp_path / "scaled", "max_batch_sise: 4\n")
    with pytest.raises(ModelLoadError, match="max_batch_sise: unknown field"):
        await manager.load("scaled")

    assert manager.get("scaled") is record
    assert record.state is ModelState.READY
    assert await factor_of(manager) == 1


async def test_a_failed_reload_of_a_new_version_keeps_the_ready_version_serving(
    make_manager: Factory, tmp_path: Path
) -> None:
    scaled_versions(tmp_path, (1,))
    manager = make_manager(tmp_path)
    await manager.start(["scaled"])
    record = manager.get("scaled")

    corrupt = tmp_path / "scaled" / "2" / "model.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not an onnx graph" * 10)
    with pytest.raises(ModelLoadError, match=f"{corrupt}: not a loadable ONNX model"):
        await manager.load("scaled")

    states_now = {v.version: v.state for v in manager.records("scaled")}
    assert states_now.get(2) is ModelState.FAILED
    assert manager.get("scaled") is record, "the version that served before the reload must keep serving"
    assert record.state is ModelState.READY
    assert await factor_of(manager) == 1


async def test_a_load_that_outlasts_model_load_timeout_fails(
    make_manager: Factory, gated_model: Callable[[Path], LoadGate], example_repository: Path
) -> None:
    gate = gated_model(example_repository)
    manager = make_manager(example_repository, load_timeout_s=0.05)

    # The load is held until after the timeout, so the timeout fires whatever the clock does.
    await manager.start(["gated", "simple"])

    [record] = manager.records("gated")
    assert record.state is ModelState.FAILED
    assert str(example_repository / "gated" / "1" / "model.joblib") in record.reason
    assert "did not load within 0.05 s (MODEL_LOAD_TIMEOUT)" in record.reason
    assert record.runtime is None
    with pytest.raises(ModelNotReady, match="MODEL_LOAD_TIMEOUT"):
        manager.get("gated")
    assert manager.get("simple").state is ModelState.READY
    gate.opened.set()


async def test_a_request_that_cannot_finish_in_time_is_deadline_exceeded(
    make_manager: Factory, built_repository: Path, executor: ThreadPoolExecutor
) -> None:
    manager = make_manager(built_repository, request_timeout_s=0.1)
    await manager.start(["simple"])
    await manager.infer(simple_request())  # warm: the session has run once
    stats = manager.get("simple").stats

    async with busy(executor):
        # Every inference thread is held, so the batch cannot start before the deadline.
        with pytest.raises(
            DeadlineExceeded, match=r"model 'simple' did not answer within 0.1 s \(REQUEST_TIMEOUT_SEC\)"
        ):
            await manager.infer(simple_request(1))

    assert (stats.success.count, stats.fail.count) == (1, 1)
    assert (await manager.infer(simple_request(2))).version == 1


async def test_the_v2_timeout_parameter_drops_a_queued_request_without_running_it(
    make_manager: Factory, built_repository: Path, executor: ThreadPoolExecutor
) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple"])
    await manager.infer(simple_request())
    stats = manager.get("simple").stats
    request = simple_request(1)
    request.parameters["timeout"] = 50_000  # microseconds, as Triton's clients send it

    async with busy(executor):
        with pytest.raises(DeadlineExceeded, match=r"did not answer within 0.05 s \(the request's timeout parameter\)"):
            await manager.infer(request)
    await manager.infer(simple_request(2))

    assert stats.execution_count == 2  # the timed-out request never ran: only the two others did


def ranked_request(seed: int = 0) -> InferenceRequest:
    """``simple_request`` for the model `ranked`."""
    request = simple_request(seed)
    return InferenceRequest("ranked", request.inputs)


def ranked_simple(built_repository: Path, target: Path, policy: str) -> Path:
    """A repository holding `ranked`, `simple` with two priority levels and ``policy`` for level 1."""
    shutil.copytree(built_repository / "simple" / "1", target / "ranked" / "1")
    config = (built_repository / "simple" / "config.yaml").read_text()
    write_config(
        target / "ranked",
        config + f"dynamic_batching:\n  priority_levels: 2\n  priority_queue_policy:\n    1: {policy}\n",
    )
    return target


async def test_a_reject_queue_policy_refuses_a_request_that_waited_past_its_levels_timeout(
    make_manager: Factory, built_repository: Path, executor: ThreadPoolExecutor, tmp_path: Path
) -> None:
    repository = ranked_simple(built_repository, tmp_path, "{default_timeout_microseconds: 50000}")
    manager = make_manager(repository)
    await manager.start(["ranked"])
    await manager.infer(ranked_request())
    request = ranked_request(1)
    request.parameters["priority"] = 1

    async with busy(executor):
        with pytest.raises(DeadlineExceeded, match=r"within 0.05 s \(the queue policy's timeout of priority level 1\)"):
            await manager.infer(request)
    slow = ranked_request(2)
    slow.parameters["priority"] = 2  # level 2 has no policy: no queue timeout
    await manager.infer(slow)

    assert manager.get("ranked").stats.execution_count == 2


async def test_under_delay_a_requests_own_timeout_delays_it_rather_than_refusing_it(
    make_manager: Factory, built_repository: Path, executor: ThreadPoolExecutor, tmp_path: Path
) -> None:
    policy = "{timeout_action: DELAY, default_timeout_microseconds: 1000000, allow_timeout_override: true}"
    manager = make_manager(ranked_simple(built_repository, tmp_path, policy))
    await manager.start(["ranked"])
    await manager.infer(ranked_request())
    request = ranked_request(1)
    request.parameters.update(priority=1, timeout=1_000)  # 1 ms: far shorter than the time it waits

    async with busy(executor):
        answer = asyncio.create_task(manager.infer(request))
        await asyncio.sleep(0.05)
        assert not answer.done()
    result = await answer

    assert result.model == "ranked"


@pytest.mark.parametrize("value", [-1, 1.5, "100", True])
async def test_a_timeout_parameter_that_is_not_whole_microseconds_is_invalid(
    make_manager: Factory, built_repository: Path, value: object
) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple"])
    request = simple_request()
    request.parameters["timeout"] = value
    with pytest.raises(InvalidInput, match=r"parameter 'timeout'.*whole number of microseconds"):
        await manager.infer(request)


async def test_max_in_flight_refuses_requests_beyond_it_across_models_until_one_finishes(
    make_manager: Factory, built_repository: Path, executor: ThreadPoolExecutor
) -> None:
    manager = make_manager(built_repository, max_in_flight=1)
    await manager.start(["simple", "mlp"])
    mlp_request = InferenceRequest("mlp", {"input": np.ones((1, 16), np.float32)})

    async with busy(executor) as gate:
        held = asyncio.create_task(manager.infer(simple_request()))
        await until(lambda: manager.in_flight == 1, "the first request is inside")
        with pytest.raises(Overloaded, match=r"holds 1 inference requests \(MAX_INFLIGHT_REQUESTS\)"):
            await manager.infer(mlp_request)
        gate.set()
        await held

    assert manager.in_flight == 0
    assert (await manager.infer(mlp_request)).outputs["output"].shape[0] == 1


# -- shutdown, statistics, index ---------------------------------------------------------------------


async def test_close_lets_queued_requests_finish_then_unloads_everything(
    make_manager: Factory, built_repository: Path, executor: ThreadPoolExecutor
) -> None:
    manager = make_manager(built_repository)
    await manager.start(["simple", "mlp"])
    simple, mlp = manager.get("simple"), manager.get("mlp")
    request = simple_request()

    async with busy(executor) as gate:
        pending = asyncio.create_task(manager.infer(request))
        await until(lambda: simple.stats.queue.count == 1, "the request reached its batch")
        closing = asyncio.create_task(manager.close())
        await until(lambda: simple.state is ModelState.UNLOADING, "close() began unloading")
        assert not pending.done()
        gate.set()
        response = await pending
        await closing

    np.testing.assert_array_equal(response.outputs["OUTPUT0"], request.inputs["INPUT0"] + request.inputs["INPUT1"])
    assert manager.ready() == []
    for record in (simple, mlp):
        assert (record.state, record.runtime, record.batcher) == (ModelState.UNAVAILABLE, None, None)
    with pytest.raises(ModelNotReady):
        manager.get("simple")


async def test_stats_count_successes_failures_and_samples(make_manager: Factory, built_repository: Path) -> None:
    observer = Recorder()
    manager = make_manager(built_repository, observer=observer)
    await manager.start(["simple"])
    stats = manager.get("simple").stats

    await manager.infer(simple_request(0))
    await manager.infer(simple_request(1))
    bad = InferenceRequest("simple", {"INPUT0": np.zeros((1, 16), np.float32), "INPUT1": np.zeros((1, 16), np.float32)})
    with pytest.raises(InvalidInput, match="input 'INPUT0' has datatype FP32; model 'simple' expects INT32"):
        await manager.infer(bad)

    assert (stats.success.count, stats.fail.count) == (2, 1)
    assert stats.success.ns > 0
    assert stats.execution_count == 2
    assert stats.inference_count == 4  # two requests of two samples each
    assert observer.batches == [("simple", 2), ("simple", 2)]
    assert [(name, ok) for name, _, ok in observer.loads] == [("simple", True)]
    assert stats.last_inference_ms > 0


async def test_the_index_lists_never_loaded_models_as_unavailable(
    make_manager: Factory, built_repository: Path
) -> None:
    manager = make_manager(built_repository)
    await manager.start(["mlp"])

    index = await manager.index()

    assert [(v.name, v.version, v.state) for v in index] == [
        ("iris", None, ModelState.UNAVAILABLE),
        ("mlp", 1, ModelState.READY),
        ("simple", None, ModelState.UNAVAILABLE),
        ("tiny_cnn", None, ModelState.UNAVAILABLE),
    ]

"""The memory budget: footprints measured at load, on-demand loading, and LRU eviction of idle models.

The big models are ``y = x @ W`` with 16 MiB of weights (S, their file's size). Each holds at least
S (its file is the floor of a footprint) and, measured, little more. The budgets below are told each
reserves 2 S, the default for a model never loaded, so that the plans do not depend on what a load
happened to measure: a budget of 2.5 S then holds one of them at a time until they are measured, and
one of 3.9 S two, a third needing an eviction.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modelserve.errors import InsufficientMemory, ModelNotReady
from modelserve.models.budget import Holder, MemoryBudget
from modelserve.models.manager import ModelManager
from modelserve.models.memory import MIB, rss_bytes
from modelserve.models.records import ModelState
from modelserve.types import InferenceRequest
from tests.builders import matmul_onnx, write_config
from tests.models.conftest import Factory
from tests.models.test_manager import Recorder, busy

FEATURES = 2048


@pytest.fixture
def big_models(tmp_path: Path) -> Path:
    for name in ("a", "b", "c"):
        matmul_onnx(tmp_path / name / "1" / "model.onnx", features=FEATURES)
    return tmp_path


def file_size(root: Path) -> int:
    return (root / "a" / "1" / "model.onnx").stat().st_size


def request(model: str) -> InferenceRequest:
    return InferenceRequest(model, {"x": np.ones((1, FEATURES), np.float32)})


def budget(root: Path, units: float) -> MemoryBudget:
    made = MemoryBudget("CPU", int(units * file_size(root)), "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    for name in ("a", "b", "c"):
        made.learn(name, 1, 2 * file_size(root))
    return made


def loaded(manager: ModelManager) -> set[str]:
    return {r.name for r in manager.ready()}


# -- the plan, on its own ------------------------------------------------------------------------


def holder(name: str, mib: int, last_used: int, *, pinned: bool = False, busy: bool = False) -> Holder:
    return Holder(name, {"CPU": mib * MIB}, last_used, pinned, busy)


def test_room_is_made_least_recently_used_first_and_only_as_much_as_needed() -> None:
    plan = MemoryBudget("CPU", 100 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    holders = [holder("new", 30, 3), holder("old", 30, 1), holder("mid", 30, 2)]
    assert [h.name for h in plan.room_for("x", 20, holders, may_evict=True)] == []
    assert [h.name for h in plan.room_for("x", 30 * MIB, holders, may_evict=True)] == ["old"]
    assert [h.name for h in plan.room_for("x", 60 * MIB, holders, may_evict=True)] == ["old", "mid"]


def test_pinned_and_busy_models_are_never_chosen_and_nothing_is_evicted_when_it_cannot_suffice() -> None:
    plan = MemoryBudget("CPU", 100 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    holders = [holder("pin", 40, 1, pinned=True), holder("busy", 30, 2, busy=True), holder("idle", 20, 3)]
    assert [h.name for h in plan.room_for("x", 30 * MIB, holders, may_evict=True)] == ["idle"]
    with pytest.raises(InsufficientMemory) as refused:
        plan.room_for("x", 60 * MIB, holders, may_evict=True)
    message = refused.value.message
    assert "cannot load model 'x': it needs about 60 MiB" in message
    assert "pinned: pin (40 MiB); serving requests: busy (30 MiB); idle: idle (20 MiB)" in message
    assert "raise MODEL_MEMORY_BUDGET_MB" in message


def test_without_eviction_a_load_that_does_not_fit_names_the_models_to_unload() -> None:
    plan = MemoryBudget("CPU", 100 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    with pytest.raises(InsufficientMemory, match=r"hold 80 of the 100 MiB.*: a \(50 MiB\), b \(30 MiB\)\. Unload one"):
        plan.room_for("x", 30 * MIB, [holder("a", 50, 1), holder("b", 30, 2)], may_evict=False)


def test_a_model_larger_than_the_whole_budget_is_refused_outright() -> None:
    plan = MemoryBudget("CPU", 10 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    with pytest.raises(InsufficientMemory, match=r"needs about 20 MiB of CPU memory, more than MODEL_MEMORY_BUDGET_MB"):
        plan.room_for("x", 20 * MIB, [], may_evict=True)


def test_a_version_never_measured_reserves_twice_its_files_then_what_it_was_last_seen_to_hold(tmp_path: Path) -> None:
    model = matmul_onnx(tmp_path / "m" / "1" / "model.onnx", features=256)
    plan = MemoryBudget("CPU", 100 * MIB, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    assert plan.estimate("m", 1, model) == 2 * model.stat().st_size
    plan.learn("m", 1, 5 * MIB)
    plan.learn("m", 1, 3 * MIB)  # the latest reading: one noisy reading must not shut a model out for good
    assert plan.estimate("m", 1, model) == 3 * MIB


# -- footprints ----------------------------------------------------------------------------------


async def test_a_footprint_is_measured_at_load_at_least_the_weights(big_models: Path, make_manager: Factory) -> None:
    manager = make_manager(big_models, budgets=[budget(big_models, 10)])
    await manager.load("a")
    held = manager.get("a").memory_bytes
    assert file_size(big_models) <= held < 4 * file_size(big_models)


# -- on demand -----------------------------------------------------------------------------------


async def test_requests_for_a_model_not_loaded_load_it_once_and_all_count_as_cold_starts(
    big_models: Path, make_manager: Factory
) -> None:
    recorder = Recorder()
    manager = make_manager(big_models, control_enabled=False, on_demand=True, observer=recorder)
    await manager.start([])
    responses = await asyncio.gather(*(manager.infer(request("a")) for _ in range(8)))
    assert all(r.outputs["y"].shape == (1, FEATURES) for r in responses)
    assert [model for model, _, ok in recorder.loads if ok] == ["a"]  # one load for eight requests
    assert recorder.cold_starts == ["a"] * 8
    await manager.infer(request("a"))
    assert len(recorder.cold_starts) == 8  # warm now


async def test_without_on_demand_a_model_not_loaded_is_not_ready(big_models: Path, make_manager: Factory) -> None:
    manager = make_manager(big_models)
    await manager.start([])
    with pytest.raises(ModelNotReady, match="model 'a' is not loaded; load it with POST"):
        await manager.obtain("a")


async def test_a_model_that_failed_is_retried_on_demand_only_after_the_cool_down(
    big_models: Path, make_manager: Factory
) -> None:
    (big_models / "a" / "1" / "model.onnx").write_bytes(b"not onnx")
    recorder = Recorder()
    manager = make_manager(big_models, on_demand=True, breaker_cooldown_s=0.3, observer=recorder)
    with pytest.raises(ModelNotReady, match="failed to load on demand"):
        await manager.infer(request("a"))
    with pytest.raises(ModelNotReady, match=r"failed to load: .*the next request after \d+ s tries to load it again"):
        await manager.infer(request("a"))
    assert len(recorder.loads) == 1
    matmul_onnx(big_models / "a" / "1" / "model.onnx", features=FEATURES)
    await asyncio.sleep(0.35)
    assert (await manager.infer(request("a"))).outputs["y"].shape == (1, FEATURES)


# -- eviction ------------------------------------------------------------------------------------


async def test_a_load_that_needs_room_evicts_the_idle_model_and_reports_it(
    big_models: Path, make_manager: Factory
) -> None:
    recorder = Recorder()
    manager = make_manager(big_models, on_demand=True, budgets=[budget(big_models, 2.5)], observer=recorder)
    await manager.infer(request("a"))
    await manager.infer(request("b"))
    assert loaded(manager) == {"b"}
    assert recorder.evictions == [("a", "budget")]
    evicted = manager.records("a")[0]
    assert evicted.state is ModelState.UNAVAILABLE
    assert evicted.reason == "evicted to make room for model 'b'"
    await manager.infer(request("a"))  # and back, on demand: measured now, it may fit beside b
    assert "a" in loaded(manager)


async def test_the_least_recently_used_model_goes_first(tmp_path: Path, make_manager: Factory) -> None:
    # Two held at once: a footprint must then stay under 1.9 S whatever else the process allocated
    # while it loaded (a new thread's malloc arena, some MiB), so these models are larger: S = 64 MiB.
    for name in ("a", "b", "c"):
        matmul_onnx(tmp_path / name / "1" / "model.onnx", features=2 * FEATURES)
    recorder = Recorder()
    manager = make_manager(tmp_path, on_demand=True, budgets=[budget(tmp_path, 3.9)], observer=recorder)

    def large(model: str) -> InferenceRequest:
        return InferenceRequest(model, {"x": np.ones((1, 2 * FEATURES), np.float32)})

    await manager.infer(large("a"))
    await manager.infer(large("b"))
    await manager.infer(large("a"))  # b is now the least recently used
    await manager.infer(large("c"))
    assert loaded(manager) == {"a", "c"}
    assert recorder.evictions == [("b", "budget")]


async def test_a_pinned_model_is_never_evicted_and_the_load_fails_with_the_reason(
    big_models: Path, make_manager: Factory
) -> None:
    write_config(big_models / "a", "pinned: true\n")
    manager = make_manager(big_models, on_demand=True, budgets=[budget(big_models, 2.5)])
    await manager.infer(request("a"))
    with pytest.raises(InsufficientMemory, match=r"cannot load model 'b'.*pinned: a \(\d+ MiB\)"):
        await manager.infer(request("b"))
    assert loaded(manager) == {"a"}
    assert "b" not in {r.name for r in await manager.index() if r.state is ModelState.FAILED}
    assert (await manager.infer(request("a"))).outputs["y"].shape == (1, FEATURES)


async def test_a_load_waits_for_a_busy_model_to_finish_its_requests_before_evicting_it(
    big_models: Path, make_manager: Factory, executor: ThreadPoolExecutor
) -> None:
    manager = make_manager(big_models, on_demand=True, budgets=[budget(big_models, 2.5)])
    await manager.infer(request("a"))
    async with busy(executor) as gate:
        queued = asyncio.create_task(manager.infer(request("a")))
        wanting_b = asyncio.create_task(manager.infer(request("b")))
        await asyncio.sleep(0.2)
        assert not wanting_b.done()
        assert manager.get("a").in_flight == 1  # a is not unloaded under its request
        gate.set()
        assert (await queued).outputs["y"].shape == (1, FEATURES)
        assert (await wanting_b).outputs["y"].shape == (1, FEATURES)
    assert loaded(manager) == {"b"}


async def test_a_load_that_waited_too_long_for_a_busy_model_is_507_naming_it(
    big_models: Path, make_manager: Factory, executor: ThreadPoolExecutor
) -> None:
    manager = make_manager(big_models, on_demand=True, budgets=[budget(big_models, 2.5)], load_timeout_s=0.2)
    await manager.infer(request("a"))
    async with busy(executor):
        queued = asyncio.create_task(manager.infer(request("a")))
        with pytest.raises(InsufficientMemory, match=r"serving requests: a \(\d+ MiB\); idle: none"):
            await manager.infer(request("b"))
    await queued
    assert loaded(manager) == {"a"}


async def test_in_explicit_mode_nothing_is_evicted_and_the_refusal_names_what_to_unload(
    big_models: Path, make_manager: Factory
) -> None:
    manager = make_manager(big_models, budgets=[budget(big_models, 2.5)])
    await manager.load("a")
    with pytest.raises(InsufficientMemory, match=r"cannot load model 'b'.*: a \(\d+ MiB\)\. Unload one of them"):
        await manager.load("b")
    assert loaded(manager) == {"a"}
    await manager.unload("a")
    await manager.load("b")
    assert loaded(manager) == {"b"}


async def test_concurrent_requests_across_models_are_all_answered_within_the_budget(
    big_models: Path, make_manager: Factory
) -> None:
    manager = make_manager(big_models, on_demand=True, budgets=[budget(big_models, 2.5)])
    order = ["a", "b", "c", "a", "c", "b", "b", "a", "c"] * 2
    answers = await asyncio.gather(*(manager.infer(request(m)) for m in order))
    assert [answer.model for answer in answers] == order
    assert sum(r.memory_bytes for r in manager.ready()) <= int(2.5 * file_size(big_models))

"""The circuit breaker: a model failing in its runtime is refused for a cool-down, then tried again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from modelserve.errors import (
    CircuitOpen,
    ClientDisconnected,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    OutOfMemory,
    Overloaded,
)
from modelserve.models.breaker import BreakerState, CircuitBreaker
from modelserve.models.manager import ModelManager
from modelserve.types import InferenceRequest
from tests.builders import odd_batch_fails_onnx, write_config
from tests.clock import Clock
from tests.models.conftest import Factory
from tests.protocol.serving import serving

COOLDOWN_S = 0.3


def failing(rows: int) -> InferenceRequest:
    """An even ``rows`` runs; an odd one fails in ONNX Runtime."""
    return InferenceRequest("odd", {"x": np.ones((rows, 3), np.float32)})


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    odd_batch_fails_onnx(tmp_path / "odd" / "1" / "model.onnx")
    write_config(tmp_path / "odd", "max_batch_size: 0\n")
    return tmp_path


@pytest.fixture
async def manager(repository: Path, make_manager: Factory) -> ModelManager:
    made = make_manager(repository, breaker_failures=3, breaker_cooldown_s=COOLDOWN_S)
    await made.start(["odd"])
    return made


async def test_consecutive_runtime_failures_open_the_breaker_and_a_success_after_cooldown_closes_it(
    manager: ModelManager,
) -> None:
    breaker = manager.get("odd").breaker
    assert breaker is not None
    for _ in range(3):
        with pytest.raises(InferenceFailed):
            await manager.infer(failing(1))
    assert breaker.state is BreakerState.OPEN
    executions = manager.get("odd").stats.execution_count

    with pytest.raises(CircuitOpen, match=r"model 'odd' is refused: its last 3 request\(s\) failed in the runtime"):
        await manager.infer(failing(2))  # a good request too: the breaker does not know it is good
    assert manager.get("odd").stats.execution_count == executions  # refused without running

    await asyncio.sleep(COOLDOWN_S + 0.05)
    response = await manager.infer(failing(2))  # the trial
    assert response.outputs["y"].shape == (2, 3)
    assert breaker.state is BreakerState.CLOSED


async def test_a_failed_trial_opens_the_breaker_again_at_once(manager: ModelManager) -> None:
    for _ in range(3):
        with pytest.raises(InferenceFailed):
            await manager.infer(failing(1))
    await asyncio.sleep(COOLDOWN_S + 0.05)
    with pytest.raises(InferenceFailed):
        await manager.infer(failing(1))  # the trial fails
    with pytest.raises(CircuitOpen, match="retry in"):
        await manager.infer(failing(2))


async def test_bad_input_and_successes_in_between_do_not_open_it(manager: ModelManager) -> None:
    for _ in range(5):
        with pytest.raises(InvalidInput):
            await manager.infer(InferenceRequest("odd", {"x": np.ones((2, 4), np.float32)}))
        with pytest.raises(InferenceFailed):
            await manager.infer(failing(1))
        await manager.infer(failing(2))
    breaker = manager.get("odd").breaker
    assert breaker is not None
    assert breaker.state is BreakerState.CLOSED


async def test_a_trial_ending_in_bad_input_leaves_the_next_request_to_be_the_trial(manager: ModelManager) -> None:
    for _ in range(3):
        with pytest.raises(InferenceFailed):
            await manager.infer(failing(1))
    await asyncio.sleep(COOLDOWN_S + 0.05)
    with pytest.raises(InvalidInput):  # the trial: refused before it ran, so it says nothing of the model
        await manager.infer(InferenceRequest("odd", {"x": np.ones((2, 4), np.float32)}))
    response = await manager.infer(failing(2))  # not "a trial request is running", forever
    assert response.outputs["y"].shape == (2, 3)
    breaker = manager.get("odd").breaker
    assert breaker is not None
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "outcome",
    [
        InvalidInput("bad shape"),
        DeadlineExceeded("late"),
        Overloaded("full"),
        OutOfMemory("no memory"),
        ClientDisconnected("gone"),
        asyncio.CancelledError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_outcome_of_a_trial_ends_the_half_open_state(outcome: BaseException) -> None:
    clock = Clock(100.0)
    breaker = CircuitBreaker("m", failures=1, cooldown_s=30.0, clock=clock)
    breaker.failed("boom")
    clock.now += 30.0
    assert breaker.admit() is True  # the trial
    breaker.finished(outcome, trial=True)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit() is True  # at once: the next request is the next trial
    breaker.finished(None, trial=True)
    assert breaker.state is BreakerState.CLOSED


def test_an_inconclusive_request_admitted_before_the_trial_leaves_the_trial_running() -> None:
    clock = Clock(100.0)
    breaker = CircuitBreaker("m", failures=1, cooldown_s=30.0, clock=clock)
    breaker.failed("boom")
    clock.now += 30.0
    assert breaker.admit() is True
    breaker.finished(InvalidInput("an older request's bad input"), trial=False)
    with pytest.raises(CircuitOpen, match="a trial request is running"):
        breaker.admit()


def test_over_http_an_open_breaker_is_503_with_the_reason_and_other_models_keep_serving(
    repository: Path, built_repository: Path
) -> None:
    (repository / "simple").symlink_to(built_repository / "simple", target_is_directory=True)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    simple = {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))} for n in ("INPUT0", "INPUT1")
        ]
    }
    with serving(repository, circuit_breaker_failures=2, circuit_breaker_cooldown_sec=30) as client:
        codes = [client.post("/v2/models/odd/infer", json=body).status_code for _ in range(2)]
        refused = client.post("/v2/models/odd/infer", json=body)
        other = client.post("/v2/models/simple/infer", json=simple)
        metrics = client.get("/metrics").text

    assert codes == [500, 500]
    assert refused.status_code == 503
    assert "circuit breaker" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    assert other.status_code == 200
    assert 'model_serving_rejected_requests_total{model="odd",reason="circuit_open"} 1.0' in metrics

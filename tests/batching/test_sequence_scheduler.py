"""The sequence scheduler with a plain function as its model: control inputs and implicit state filled
per row, null rows where a direct slot has nothing ready, the state never answered, idle sequences
released by a timer on a clock the test moves, the oldest strategy's delay held on that clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelserve.batching.sequence_scheduler import Control, SequenceScheduler, SequenceSettings, State
from modelserve.errors import InferenceFailed, InvalidInput
from modelserve.models.stats import ModelStats
from tests.batching.fake_time import FakeTime

CONTROLS = (
    Control("START", "START", "INT32"),
    Control("END", "END", "FP32", 0.0, 1.0),
    Control("READY", "READY", "BOOL", False, True),
    Control("CORRID", "CORRID", "UINT64"),
)
STATE = State("STATE_IN", "STATE_OUT", "INT32", (1,))


class Accumulator:
    """OUTPUT = STATE_IN * (1 - START) + INPUT, remembering every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[dict[str, np.ndarray[Any, Any]]] = []

    def __call__(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        self.batches.append(inputs)
        if (inputs["INPUT"] < 0).any():
            raise ValueError("negative input")
        total = inputs["STATE_IN"] * (1 - inputs["START"]) + inputs["INPUT"]
        return {"OUTPUT": total, "STATE_OUT": total}


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def value(v: int) -> dict[str, np.ndarray[Any, Any]]:
    return {"INPUT": np.array([[v]], dtype=np.int32)}


def scheduler(model: Accumulator, executor: ThreadPoolExecutor, clock: FakeTime, **settings: Any) -> SequenceScheduler:
    given = SequenceSettings(
        **{"direct": True, "max_batch_size": 2, "controls": CONTROLS, "states": (STATE,)} | settings
    )
    return SequenceScheduler("acc", model, executor, ModelStats(), given, clock=clock, call_later=clock.call_later)


async def test_each_sequence_keeps_its_own_sum_and_controls_fill_each_row(executor: ThreadPoolExecutor) -> None:
    model, clock = Accumulator(), FakeTime()
    runner = scheduler(model, executor, clock)
    first = runner.enqueue(value(1), 10, True, False)  # runs at once, in row 0, its sequence's slot
    later = [runner.enqueue(value(5), 20, True, False), runner.enqueue(value(2), 10, False, False)]
    assert int((await first)["OUTPUT"][0, 0]) == 1
    answers = await asyncio.gather(*later)
    assert [int(r["OUTPUT"][0, 0]) for r in answers] == [5, 3]
    assert all("STATE_OUT" not in r for r in answers)  # the state is the server's, never answered
    batch = model.batches[1]
    assert batch["CORRID"].tolist() == [[10], [20]]
    assert batch["CORRID"].dtype == np.uint64
    assert batch["START"].tolist() == [[0], [1]]
    assert batch["READY"].tolist() == [[True], [True]]
    # Only sequence 20 has a request: sequence 10 keeps row 0, a null row (READY false, zeros).
    last = await runner.enqueue(value(2), 20, False, True)
    assert int(last["OUTPUT"][0, 0]) == 7
    batch = model.batches[-1]
    assert batch["READY"].tolist() == [[False], [True]]
    assert batch["READY"].dtype == np.bool_
    assert batch["INPUT"].tolist() == [[0], [2]]
    assert batch["END"].tolist() == [[0.0], [1.0]]
    assert batch["END"].dtype == np.float32
    assert int((await runner.enqueue(value(4), 10, False, False))["OUTPUT"][0, 0]) == 7
    with pytest.raises(InvalidInput, match="sequence 20"):  # ended
        runner.enqueue(value(1), 20, False, False)
    await runner.close()


async def test_an_idle_sequence_is_released_on_the_clock(executor: ThreadPoolExecutor) -> None:
    model, clock = Accumulator(), FakeTime()
    runner = scheduler(model, executor, clock, idle_us=500)
    await runner.enqueue(value(1), 1, True, False)
    assert clock.pending == [clock.now_ns + 500_000]
    clock.advance(499_999)
    assert runner.sequences.get(1) is not None
    clock.advance(1)
    assert runner.sequences.get(1) is None
    with pytest.raises(InvalidInput, match="START flag"):
        runner.enqueue(value(1), 1, False, False)
    await runner.close()


async def test_oldest_holds_a_batch_for_its_delay_then_runs_what_is_ready(executor: ThreadPoolExecutor) -> None:
    model, clock = Accumulator(), FakeTime()
    runner = scheduler(model, executor, clock, direct=False, max_batch_size=2, max_queue_delay_us=100)
    first = runner.enqueue(value(1), 1, True, False)
    await asyncio.sleep(0)
    assert not model.batches
    assert not first.done()
    second = runner.enqueue(value(2), 2, True, False)  # the target reached: no more waiting
    assert [int(r["OUTPUT"][0, 0]) for r in await asyncio.gather(first, second)] == [1, 2]
    assert len(model.batches) == 1
    third = runner.enqueue(value(3), 1, False, False)
    clock.advance(100_000)  # the delay runs out: the lone request runs
    assert int((await third)["OUTPUT"][0, 0]) == 4
    await runner.close()


async def test_a_failed_batch_fails_its_requests_and_keeps_the_state(executor: ThreadPoolExecutor) -> None:
    model, clock = Accumulator(), FakeTime()
    runner = scheduler(model, executor, clock)
    await runner.enqueue(value(3), 1, True, False)
    with pytest.raises(InferenceFailed, match="model 'acc' failed"):
        await runner.enqueue(value(-1), 1, False, False)
    assert int((await runner.enqueue(value(1), 1, False, False))["OUTPUT"][0, 0]) == 4
    await runner.close()


async def test_a_string_id_for_a_numeric_corrid_is_refused(executor: ThreadPoolExecutor) -> None:
    runner = scheduler(Accumulator(), executor, FakeTime())
    with pytest.raises(InvalidInput, match="sequence_id 'abc' is a string"):
        runner.enqueue(value(1), "abc", True, False)
    await runner.close()

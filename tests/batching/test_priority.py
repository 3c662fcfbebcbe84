"""Priority levels and queue policies in the batcher: the highest level is taken first, a level's own
bound refuses only that level, and a DELAY policy moves a request that waited too long behind the rest."""

from __future__ import annotations

import asyncio

import pytest

from modelserve.batching.priority import QueuePolicy
from modelserve.errors import Overloaded
from tests.batching.fake_time import FakeTime
from tests.batching.runs import Factory, GatedRun, assert_doubled, rows
from tests.waiting import until


async def test_the_highest_level_queued_runs_first_whatever_arrived_before_it(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=2, priority_levels=3)
    running = batcher.enqueue(rows(1, 0), 1, level=3)
    await model.started()
    low = [batcher.enqueue(rows(1, i), 1, level=3) for i in range(1, 6)]
    middle = batcher.enqueue(rows(1, 10), 1, level=2)
    high = batcher.enqueue(rows(1, 20), 1, level=1)

    model.gate.set()
    await asyncio.gather(running, *low, middle, high)

    firsts = [int(call["x"][0, 0]) // 1000 for call in model.calls]
    assert firsts == [0, 20, 10, 1, 3, 5]  # the running batch, then by level: a batch holds one level only
    assert model.sizes == [1, 1, 1, 2, 2, 1]
    assert_doubled(high.result(), rows(1, 20))


async def test_a_full_level_refuses_its_own_requests_and_no_others(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=8, priority_levels=2)
    running = batcher.enqueue(rows(1, 0), 1, level=2)
    await model.started()
    queued = [batcher.enqueue(rows(1, i), 1, level=2, level_max_queue=2) for i in (1, 2)]

    with pytest.raises(Overloaded, match="priority level 2 queued"):
        batcher.enqueue(rows(1, 3), 1, level=2, level_max_queue=2)
    high = batcher.enqueue(rows(1, 4), 1, level=1, level_max_queue=2)

    model.gate.set()
    await asyncio.gather(running, *queued, high)
    assert sum(model.sizes) == 4


async def test_a_request_past_its_delay_timeout_waits_behind_every_other(make_batcher: Factory) -> None:
    model = GatedRun()
    clock = FakeTime()
    batcher = make_batcher(model, max_batch_size=1, priority_levels=2, clock=clock, call_later=clock.call_later)
    running = batcher.enqueue(rows(1, 0), 1, level=2)
    await model.started()
    delayed = batcher.enqueue(rows(1, 1), 1, level=1, delay_ns=1_000_000)  # high, but may wait only 1 ms
    later = [batcher.enqueue(rows(1, i), 1, level=2) for i in (2, 3)]
    clock.advance(2_000_000)

    model.gate.set()
    await asyncio.gather(running, delayed, *later)

    assert [int(call["x"][0, 0]) // 1000 for call in model.calls] == [0, 2, 3, 1]


async def test_a_request_within_its_delay_timeout_keeps_its_level(make_batcher: Factory) -> None:
    model = GatedRun()
    clock = FakeTime()
    batcher = make_batcher(model, max_batch_size=1, priority_levels=2, clock=clock, call_later=clock.call_later)
    running = batcher.enqueue(rows(1, 0), 1, level=2)
    await model.started()
    low = batcher.enqueue(rows(1, 2), 1, level=2)
    high = batcher.enqueue(rows(1, 1), 1, level=1, delay_ns=1_000_000)
    await until(lambda: batcher.queued == 2, "both queued")

    model.gate.set()
    await asyncio.gather(running, low, high)

    assert [int(call["x"][0, 0]) // 1000 for call in model.calls] == [0, 1, 2]


@pytest.mark.parametrize(
    ("policy", "requested", "expected"),
    [
        (QueuePolicy(default_timeout_us=500), None, 500),
        (QueuePolicy(default_timeout_us=500), 100, 500),  # no override allowed
        (QueuePolicy(default_timeout_us=500, allow_timeout_override=True), 100, 100),
        (QueuePolicy(default_timeout_us=500, allow_timeout_override=True), 900, 500),  # never lengthened
        (QueuePolicy(allow_timeout_override=True), 900, 900),
        (QueuePolicy(), 900, 0),
    ],
)
def test_a_requests_queue_timeout_follows_triton(policy: QueuePolicy, requested: int | None, expected: int) -> None:
    assert policy.timeout_us(requested) == expected

"""Priority levels and queue policies in the batcher: the highest level is taken first, a level's own
bound refuses only that level, and a DELAY policy moves a request that waited too long behind the rest."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from modelserve.batching.priority import QueuePolicy
from modelserve.cpus import BACKGROUND_NICE, background_threads
from modelserve.errors import InferenceFailed, Overloaded
from tests.batching.fake_time import FakeTime
from tests.batching.runs import Arrays, Factory, GatedRun, assert_doubled, rows
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


class ThreadNamed(GatedRun):
    """A GatedRun that also records the name of the thread each call ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def __call__(self, inputs: Arrays) -> Arrays:
        self.threads.append(threading.current_thread().name)
        return super().__call__(inputs)


async def test_lower_levels_run_in_the_background_and_leave_the_top_level_an_instance(make_batcher: Factory) -> None:
    model = ThreadNamed()
    background = background_threads(2, "test-background")
    try:
        batcher = make_batcher(model, max_batch_size=1, priority_levels=2, instance_count=1, background=background)
        low = [batcher.enqueue(rows(1, i), 1, level=2) for i in (0, 1)]
        await model.started()
        # The one instance holds a lower-level batch; the top level starts beside it all the same.
        high = batcher.enqueue(rows(1, 5), 1, level=1)
        await model.started()
        assert [int(call["x"][0, 0]) // 1000 for call in model.calls] == [0, 5]
        assert model.threads[0].startswith("test-background")
        assert model.threads[1].startswith("test-inference")
        # The second lower-level request waits for the lower levels' instance, not the top level's.
        await asyncio.sleep(0.05)
        assert len(model.calls) == 2

        model.gate.set()
        await asyncio.gather(*low, high)
        assert model.threads[2].startswith("test-background")
        assert_doubled(high.result(), rows(1, 5))
    finally:
        background.shutdown(wait=True)


async def test_without_a_background_the_top_level_waits_for_an_instance(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=1, priority_levels=2, instance_count=1)
    low = batcher.enqueue(rows(1, 0), 1, level=2)
    await model.started()
    high = batcher.enqueue(rows(1, 5), 1, level=1)
    await asyncio.sleep(0.05)
    assert len(model.calls) == 1
    model.gate.set()
    await asyncio.gather(low, high)


@pytest.mark.skipif(sys.platform != "linux", reason="threads have nice values of their own on Linux only")
def test_background_threads_run_at_the_lowest_cpu_priority() -> None:
    pool = background_threads(1, "test-background")
    try:
        nice = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(10)
    finally:
        pool.shutdown(wait=True)
    assert nice == BACKGROUND_NICE
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != BACKGROUND_NICE  # the caller keeps its own


async def test_the_lane_runs_the_top_levels_queue_in_turn_and_fails_only_its_own(make_batcher: Factory) -> None:
    model = GatedRun(error=ValueError("negative input"))
    background = background_threads(1, "test-background")
    try:
        batcher = make_batcher(model, max_batch_size=4, priority_levels=2, instance_count=1, background=background)
        low = batcher.enqueue(rows(1, 0), 1, level=2)
        await model.started()
        first = batcher.enqueue(rows(1, 1), 1, level=1)
        await model.started()  # on the lane, beside the lower level's batch
        queued = [batcher.enqueue(rows(1, i), 1, level=1) for i in (2, 3)]
        await asyncio.sleep(0.05)
        assert len(model.calls) == 2  # the instance and the lane are both busy

        model.gate.set()
        await asyncio.gather(low, first, *queued)
        assert model.sizes == [1, 1, 2]  # the queued two, in one batch, once either was free
        for request, marker in zip(queued, (2, 3), strict=True):
            assert_doubled(request.result(), rows(1, marker))

        with pytest.raises(InferenceFailed, match="negative input"):
            await batcher.enqueue(rows(1, -1), 1, level=1)
        assert_doubled(await batcher.enqueue(rows(1, 4), 1, level=1), rows(1, 4))
    finally:
        background.shutdown(wait=True)

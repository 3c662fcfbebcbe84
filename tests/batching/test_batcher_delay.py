"""``max_queue_delay_ms`` in the batcher: a batch is held only while more requests can join it in time.

The batcher is given a clock the test moves (``FakeTime``) and schedules its wake-ups on it, so when a
batch is held, the timer it asked for says until when; a batch that is not held is taken from the
queue and answered while the clock stands still. Batches that run on the event loop (a cheap model,
below ``inline_below_us``) make that answer a matter of loop turns, not of threads.

Every test first shows the batcher a window of traffic (two target batches' worth of requests):
before that it knows no population, and holds as configured.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from modelserve.batching.batcher import Batcher
from modelserve.errors import ClientDisconnected
from tests.batching.fake_time import FakeTime
from tests.batching.runs import Arrays, Factory, GatedRun, assert_doubled, rows
from tests.waiting import until

MS = 1_000_000
DELAY = 5 * MS  # max_queue_delay_ms: 5


def timed(
    make_batcher: Factory, model: GatedRun, clock: FakeTime, *, max_batch_size: int, adaptive: bool = True
) -> Batcher:
    """A batcher with a 5 ms delay on ``clock``, running its batches on the loop once it has timed one."""
    return make_batcher(
        model,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=DELAY / MS,
        adaptive_delay=adaptive,
        inline_below_us=10**9,
        clock=clock,
        call_later=clock.call_later,
    )


def submit(batcher: Batcher, marker: int) -> asyncio.Task[Arrays]:
    return asyncio.create_task(batcher.submit(rows(1, marker), 1))


async def arrive(batcher: Batcher, clock: FakeTime, marker: int) -> asyncio.Task[Arrays]:
    """One request, returned once the batcher has judged it: held (it asked for a timer) or run."""
    since = clock.scheduled
    task = submit(batcher, marker)
    await until(lambda: clock.scheduled > since or task.done(), f"request {marker} held or answered")
    return task


async def answered(task: asyncio.Task[Arrays], marker: int) -> None:
    """The request is answered by turns of the loop alone: no timer ran, the clock did not move."""
    await until(task.done, f"request {marker} answered with the clock standing still")
    assert_doubled(task.result(), rows(1, marker))


async def first_window(
    batcher: Batcher, clock: FakeTime, rounds: int, clients: int, *, gap_ns: int, pause_ns: int = 0
) -> int:
    """``rounds`` rounds of ``clients`` requests, one every ``gap_ns``, each round answered before the
    next (a closed loop) and ``pause_ns`` before it. A round that is held is let go by moving the clock
    to its deadline. Returns how many requests were sent."""
    sent = 0
    for _ in range(rounds):
        clock.advance(pause_ns)
        tasks = []
        for _ in range(clients):
            clock.advance(gap_ns)
            tasks.append(await arrive(batcher, clock, sent))
            sent += 1
        if clock.pending:
            clock.advance(clock.pending[0] - clock.now_ns)
        for offset, result in enumerate(await asyncio.gather(*tasks)):
            assert_doubled(result, rows(1, sent - clients + offset))
    return sent


async def test_a_lone_client_calling_in_a_loop_waits_for_nobody(make_batcher: Factory) -> None:
    model, clock = GatedRun(open_=True), FakeTime()
    batcher = timed(make_batcher, model, clock, max_batch_size=4)
    start = clock.now_ns
    # The first window, 8 requests: until the 8th, no population is known, so each waits out the delay.
    sent = await first_window(batcher, clock, 8, 1, gap_ns=MS // 2)
    assert clock.now_ns == start + 8 * (MS // 2) + 7 * DELAY

    # From then on one request in flight is the whole population: each runs as it arrives.
    for marker in range(sent, sent + 40):
        clock.advance(MS // 2)
        task = await arrive(batcher, clock, marker)
        assert clock.pending == []
        await answered(task, marker)
    assert model.sizes == [1] * 48


async def test_a_fixed_delay_holds_a_lone_client_for_the_whole_delay(make_batcher: Factory) -> None:
    model, clock = GatedRun(open_=True), FakeTime()
    batcher = timed(make_batcher, model, clock, max_batch_size=4, adaptive=False)
    sent = await first_window(batcher, clock, 8, 1, gap_ns=MS // 2)
    # `queue_delay: fixed`: past the first window too, each request waits out the delay, as Triton's do.
    for marker in range(sent, sent + 4):
        clock.advance(MS // 2)
        task = await arrive(batcher, clock, marker)
        assert clock.pending == [clock.now_ns + DELAY]
        clock.advance(DELAY)
        await answered(task, marker)
    assert model.sizes == [1] * 12


async def test_a_batch_is_held_while_clients_can_join_and_runs_once_all_of_them_have(make_batcher: Factory) -> None:
    model, clock = GatedRun(open_=True), FakeTime()
    batcher = timed(make_batcher, model, clock, max_batch_size=8)
    # Four clients, a request every 0.1 ms: a population of four, seen over the first window of 16.
    sent = await first_window(batcher, clock, 4, 4, gap_ns=MS // 10)
    assert model.sizes == [4] * 4

    clock.advance(MS // 10)
    first = clock.now_ns
    tasks = [await arrive(batcher, clock, sent)]
    # Three more clients can come, and come every 0.1 ms on average: held, to look again when a
    # silence would outlast what is left of the delay.
    assert clock.pending == [first + DELAY // 2]
    for arrival in (1, 2):
        clock.advance(MS // 10)
        tasks.append(await arrive(batcher, clock, sent + arrival))
        assert clock.pending == [math.ceil((clock.now_ns + first + DELAY) / 2)]
    assert model.sizes == [4] * 4
    clock.advance(MS // 10)
    tasks.append(await arrive(batcher, clock, sent + 3))
    # The fourth is the last of the population: the batch runs at once, below its target of 8.
    assert clock.pending == []
    for offset, task in enumerate(tasks):
        await answered(task, sent + offset)
    assert model.sizes == [4] * 5


async def test_a_held_batch_runs_what_it_has_once_the_silence_outlasts_the_rest_of_the_delay(
    make_batcher: Factory,
) -> None:
    model, clock = GatedRun(open_=True), FakeTime()
    batcher = timed(make_batcher, model, clock, max_batch_size=8)
    sent = await first_window(batcher, clock, 4, 4, gap_ns=MS // 10)

    clock.advance(MS // 10)
    task = await arrive(batcher, clock, sent)
    assert clock.pending == [clock.now_ns + DELAY // 2]
    clock.advance(DELAY // 2)  # 2.5 ms and nobody came, 2.5 ms left: not worth waiting for
    await answered(task, sent)
    assert model.sizes == [4] * 4 + [1]
    assert clock.pending == []


async def test_a_batch_is_not_held_when_requests_arrive_further_apart_than_the_delay(make_batcher: Factory) -> None:
    model, clock = GatedRun(open_=True), FakeTime()
    batcher = timed(make_batcher, model, clock, max_batch_size=8)
    # Four clients send together every 45 ms: four can be in flight, but a request comes some 10 ms
    # after another on average, too late for a 5 ms delay.
    sent = await first_window(batcher, clock, 4, 4, gap_ns=0, pause_ns=40 * MS)
    for marker in range(sent, sent + 3):
        clock.advance(40 * MS)
        task = await arrive(batcher, clock, marker)
        assert clock.pending == []
        await answered(task, marker)
    assert model.sizes == [4] * 4 + [1] * 3


async def test_a_held_request_whose_caller_hangs_up_leaves_with_client_disconnected(make_batcher: Factory) -> None:
    model, clock = GatedRun(open_=True), FakeTime()
    batcher = timed(make_batcher, model, clock, max_batch_size=8)
    hung_up = asyncio.Event()
    since = clock.scheduled
    left = asyncio.create_task(batcher.submit(rows(1, 0), 1, gone=hung_up.is_set))
    await until(lambda: clock.scheduled > since, "the request held")
    assert clock.pending == [clock.now_ns + DELAY]  # no traffic seen yet: the configured delay

    hung_up.set()
    clock.advance(DELAY)  # its batch is formed without it: it leaves unrun
    with pytest.raises(ClientDisconnected, match="hung up while the request was queued"):
        await left
    await until(lambda: batcher.queued == 0, "the abandoned request dropped")
    later = await arrive(batcher, clock, 1)
    assert clock.pending == [clock.now_ns + DELAY]
    clock.advance(DELAY)
    assert_doubled(await later, rows(1, 1))
    assert model.sizes == [1]
    np.testing.assert_array_equal(model.calls[0]["x"], rows(1, 1)["x"])

"""The dynamic batcher, driven by a real run function whose calls are held by gates.

A call of the run function blocks on a ``threading.Event`` until the test opens it, so requests
provably accumulate while a batch is running; what the function saw (batch sizes, dtypes, shapes)
is recorded and asserted on. Nothing here waits on wall-clock time: a test of ``max_queue_delay_ms``
gives the batcher a clock it moves itself (test_batcher_delay.py has the rule that decides when a
batch is held).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelserve.batching.batcher import Batcher
from modelserve.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    OutOfMemory,
    Overloaded,
)
from modelserve.models.stats import ModelStats
from tests.batching.fake_time import FakeTime
from tests.batching.runs import Arrays, Factory, GatedRun, assert_doubled, double, rows
from tests.waiting import until

# -- batching ----------------------------------------------------------------------------------------


async def test_requests_queued_during_a_batch_run_as_one_call_and_each_gets_its_slice(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=8)
    requests = [rows(1, 0), rows(2, 1), rows(1, 2), rows(3, 3)]

    first = asyncio.create_task(batcher.submit(requests[0], 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(r, len(r["x"]))) for r in requests[1:]]
    await until(lambda: batcher.queued == 3, "three requests queued behind the running batch")
    model.gate.set()
    results = await asyncio.gather(first, *later)

    assert model.sizes == [1, 6]
    np.testing.assert_array_equal(model.calls[1]["x"], np.concatenate([r["x"] for r in requests[1:]]))
    for result, request in zip(results, requests, strict=True):
        assert_doubled(result, request)


async def test_a_batch_never_holds_more_samples_than_max_batch_size(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=4)
    requests = [rows(1, 0), rows(3, 1), rows(2, 2), rows(1, 3), rows(4, 4), rows(2, 5)]

    first = asyncio.create_task(batcher.submit(requests[0], 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(r, len(r["x"]))) for r in requests[1:]]
    await until(lambda: batcher.queued == 5, "five requests queued")
    model.gate.set()
    results = await asyncio.gather(first, *later)

    assert max(model.sizes) <= 4
    assert sum(model.sizes) == sum(len(r["x"]) for r in requests)
    assert len(model.sizes) < len(requests), f"nothing was batched: {model.sizes}"
    # The oldest waiting request always goes first.
    np.testing.assert_array_equal(model.calls[1]["x"][:3], requests[1]["x"])
    for result, request in zip(results, requests, strict=True):
        assert_doubled(result, request)


async def test_requests_with_other_shapes_or_dtypes_are_never_mixed_into_one_call(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=8)
    requests = [
        rows(1, 0),
        rows(1, 1),
        rows(2, 2, features=3),
        rows(1, 3, dtype=np.float64),
        rows(2, 4),
        rows(1, 5, dtype=np.float64),
        rows(1, 6, dtype=np.int32),
    ]

    first = asyncio.create_task(batcher.submit(requests[0], 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(r, len(r["x"]))) for r in requests[1:]]
    await until(lambda: batcher.queued == 6, "six requests queued")
    model.gate.set()
    results = await asyncio.gather(first, *later)

    seen = [(call["x"].dtype, call["x"].shape) for call in model.calls]
    f32, f64, i32 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int32)
    assert seen == [(f32, (1, 4)), (f32, (3, 4)), (f32, (2, 3)), (f64, (2, 4)), (i32, (1, 4))]
    for result, request in zip(results, requests, strict=True):
        assert_doubled(result, request)


async def test_max_batch_size_0_runs_each_request_alone_with_its_arrays_untouched(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=0)
    # Unbatched models have no batch dimension: these are whole tensors, not rows.
    requests = [{"x": np.arange(4, dtype=np.float32) + 10 * i} for i in range(3)]

    first = asyncio.create_task(batcher.submit(requests[0], 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(r, 1)) for r in requests[1:]]
    await until(lambda: batcher.queued == 2, "two requests queued")
    model.gate.set()
    results = await asyncio.gather(first, *later)

    assert len(model.calls) == 3
    for call, request in zip(model.calls, requests, strict=True):
        assert call is request
        assert call["x"] is request["x"]
    for result, returned, request in zip(results, model.returned, requests, strict=True):
        assert result is returned
        assert_doubled(result, request)


# -- failures ----------------------------------------------------------------------------------------


async def test_an_exception_fails_exactly_the_requests_of_its_batch_as_inference_failed(make_batcher: Factory) -> None:
    model = GatedRun(error=RuntimeError("boom"))
    batcher = make_batcher(model, max_batch_size=2)
    bomb = {"x": -rows(1, 1)["x"]}
    requests = [rows(1, 0), bomb, rows(1, 2), rows(1, 3)]

    first = asyncio.create_task(batcher.submit(requests[0], 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(r, 1)) for r in requests[1:]]
    await until(lambda: batcher.queued == 3, "three requests queued")
    model.gate.set()
    results = await asyncio.gather(first, *later, return_exceptions=True)

    assert model.sizes == [1, 2, 1]
    assert_doubled(results[0], requests[0])
    for failed in results[1:3]:
        assert isinstance(failed, InferenceFailed)
        assert failed.message == "model 'test' failed: boom"
    assert_doubled(results[3], requests[3])
    # The batcher still serves after a failed batch.
    assert_doubled(await batcher.submit(rows(2, 9), 2), rows(2, 9))


async def test_a_modelserve_error_from_run_reaches_the_callers_of_that_batch_as_is(make_batcher: Factory) -> None:
    error = InvalidInput("x must not be negative")
    model = GatedRun(error=error)
    batcher = make_batcher(model, max_batch_size=2)
    requests = [rows(1, 0), {"x": -rows(1, 1)["x"]}, rows(1, 2), rows(1, 3)]

    first = asyncio.create_task(batcher.submit(requests[0], 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(r, 1)) for r in requests[1:]]
    await until(lambda: batcher.queued == 3, "three requests queued")
    model.gate.set()
    results = await asyncio.gather(first, *later, return_exceptions=True)

    assert results[1] is error
    assert results[2] is error
    assert_doubled(results[0], requests[0])
    assert_doubled(results[3], requests[3])


async def test_outputs_whose_first_dimension_misses_the_batch_fail_that_batch(make_batcher: Factory) -> None:
    model = GatedRun(transform=lambda inputs: {"y": inputs["x"][:1] * 2})
    batcher = make_batcher(model, max_batch_size=8)

    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(rows(n, i), n)) for i, n in ((1, 2), (2, 1))]
    await until(lambda: batcher.queued == 2, "two requests queued")
    model.gate.set()
    results = await asyncio.gather(first, *later, return_exceptions=True)

    assert model.sizes == [1, 3]
    assert_doubled(results[0], rows(1, 0))
    for failed in results[1:]:
        assert isinstance(failed, InferenceFailed)
        assert "output 'y' has shape [1, 4]; expected a first dimension of 3" in failed.message


async def test_a_lone_request_also_fails_when_outputs_miss_its_batch_size(make_batcher: Factory) -> None:
    # The same runtime bug must not depend on whether the request happened to share its batch.
    model = GatedRun(open_=True, transform=lambda inputs: {"y": inputs["x"][:1] * 2})
    batcher = make_batcher(model, max_batch_size=8)

    with pytest.raises(InferenceFailed, match=r"output 'y' has shape \[1, 4\]; expected a first dimension of 3"):
        await batcher.submit(rows(3, 0), 3)


# -- queue limits, cancellation, shutdown -----------------------------------------------------------


async def test_the_queue_refuses_requests_beyond_max_queue_size_as_overloaded(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=1, max_queue_size=2)

    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await model.started()
    queued = [asyncio.create_task(batcher.submit(rows(1, i), 1)) for i in (1, 2)]
    await until(lambda: batcher.queued == 2, "two requests queued")
    with pytest.raises(Overloaded, match="2 requests queued \\(max_queue_size\\)"):
        await batcher.submit(rows(1, 3), 1)

    model.gate.set()
    results = await asyncio.gather(first, *queued)
    for result, marker in zip(results, (0, 1, 2), strict=True):
        assert_doubled(result, rows(1, marker))
    assert_doubled(await batcher.submit(rows(1, 4), 1), rows(1, 4))


async def test_requests_whose_callers_gave_up_are_dropped_without_running(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=8)

    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await model.started()
    head, kept, middle, last = (asyncio.create_task(batcher.submit(rows(1, i), 1)) for i in (1, 2, 3, 4))
    await until(lambda: batcher.queued == 4, "four requests queued")
    # The gate is shut, so these callers time out while queued, whatever the clock does.
    for gave_up in (head, middle):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(gave_up, 0.01)
        assert gave_up.cancelled()
    model.gate.set()
    results = await asyncio.gather(first, kept, last)

    assert model.sizes == [1, 2]
    np.testing.assert_array_equal(model.calls[1]["x"], np.concatenate([rows(1, 2)["x"], rows(1, 4)["x"]]))
    for result, marker in zip(results, (0, 2, 4), strict=True):
        assert_doubled(result, rows(1, marker))


async def test_close_finishes_queued_requests_and_then_refuses_new_ones(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=1)

    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await model.started()
    queued = [asyncio.create_task(batcher.submit(rows(1, i), 1)) for i in (1, 2)]
    await until(lambda: batcher.queued == 2, "two requests queued")
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0)  # one turn of the loop: close() has begun

    with pytest.raises(ModelNotReady, match="model 'test' is unloading"):
        await batcher.submit(rows(1, 3), 1)
    assert not closing.done()
    model.gate.set()
    results = await asyncio.gather(first, *queued)
    await closing

    assert model.sizes == [1, 1, 1]
    for result, marker in zip(results, (0, 1, 2), strict=True):
        assert_doubled(result, rows(1, marker))
    with pytest.raises(ModelNotReady, match="unloading"):
        await batcher.submit(rows(1, 4), 1)


async def test_instance_count_2_runs_two_batches_at_once(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=1, instance_count=2)

    tasks = [asyncio.create_task(batcher.submit(rows(1, i), 1)) for i in (0, 1)]
    # Both calls are inside the run function while the gate is still shut: they overlap.
    await model.started(2)
    assert len(model.calls) == 2
    model.gate.set()
    results = await asyncio.gather(*tasks)

    for result, marker in zip(results, (0, 1), strict=True):
        assert_doubled(result, rows(1, marker))


# -- max_queue_delay_ms ------------------------------------------------------------------------------


async def test_a_queue_delay_holds_the_first_request_for_later_ones(make_batcher: Factory) -> None:
    model = GatedRun(open_=True)
    batcher = make_batcher(model, max_batch_size=8, max_queue_delay_ms=60_000)

    async with asyncio.timeout(20):
        first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
        await until(lambda: batcher.queued == 1, "the first request queued")
        for _ in range(100):  # many turns of the loop: the dispatcher would have taken it by now
            await asyncio.sleep(0)
        assert batcher.queued == 1
        assert model.calls == []
        rest = [asyncio.create_task(batcher.submit(rows(1, i), 1)) for i in range(1, 8)]
        results = await asyncio.gather(first, *rest)

    # Eight samples reached max_batch_size, so the batch left long before the 60 s delay.
    assert model.sizes == [8]
    for marker, result in enumerate(results):
        assert_doubled(result, rows(1, marker))


async def test_a_queue_delay_dispatches_once_the_largest_preferred_batch_size_is_reached(
    make_batcher: Factory,
) -> None:
    model = GatedRun(open_=True)
    batcher = make_batcher(model, max_batch_size=8, max_queue_delay_ms=60_000, preferred_batch_sizes=(2, 3))

    async with asyncio.timeout(20):
        first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
        await until(lambda: batcher.queued == 1, "the first request queued")
        second = asyncio.create_task(batcher.submit(rows(1, 1), 1))
        for _ in range(100):
            await asyncio.sleep(0)
        assert model.calls == [], "two samples are below the largest preferred size of 3"
        third = asyncio.create_task(batcher.submit(rows(1, 2), 1))
        results = await asyncio.gather(first, second, third)

    assert model.sizes == [3]
    for marker, result in enumerate(results):
        assert_doubled(result, rows(1, marker))


async def test_a_queue_delay_runs_a_short_batch_once_the_delay_passes(make_batcher: Factory) -> None:
    model = GatedRun(open_=True)
    clock = FakeTime()
    batcher = make_batcher(model, max_batch_size=8, max_queue_delay_ms=100, clock=clock, call_later=clock.call_later)

    arrived = clock.now_ns
    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await until(lambda: clock.pending == [arrived + 100_000_000], "the first request held for the delay")
    clock.advance(1_000_000)
    second = asyncio.create_task(batcher.submit(rows(2, 1), 2))
    await until(lambda: batcher.queued == 2, "the second request queued")
    for _ in range(100):  # many turns of the loop: the batch is still held
        await asyncio.sleep(0)
    assert model.calls == []
    assert clock.pending == [arrived + 100_000_000], "the deadline is the oldest request's"

    clock.advance(99_000_000)
    results = await asyncio.gather(first, second)

    # Below the target size the batch waits out the delay, then runs what it has.
    assert model.sizes == [3]
    assert_doubled(results[0], rows(1, 0))
    assert_doubled(results[1], rows(2, 1))


async def test_without_a_queue_delay_an_idle_batcher_runs_a_request_at_once(make_batcher: Factory) -> None:
    model = GatedRun()
    batcher = make_batcher(model, max_batch_size=8)

    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await model.started()
    assert model.sizes == [1]
    model.gate.set()
    assert_doubled(await first, rows(1, 0))


# -- small models on the event loop ------------------------------------------------------------------


class ThreadRecorder:
    """``double`` that records which thread ran each call and sleeps ``delay_s`` when asked to."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.delay_s = 0.0

    def __call__(self, inputs: Arrays) -> Arrays:
        self.threads.append(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        return double(inputs)


async def test_a_model_faster_than_inline_below_us_runs_on_the_event_loop_once_measured(
    make_batcher: Factory,
) -> None:
    model = ThreadRecorder()
    batcher = make_batcher(model, max_batch_size=8, inline_below_us=50_000)
    for i in range(4):
        assert_doubled(await batcher.submit(rows(1, i), 1), rows(1, i))

    loop_thread = threading.current_thread().name
    assert model.threads[0] != loop_thread  # its cost is unknown until it has run once
    assert model.threads[1:] == [loop_thread] * 3


async def test_a_model_slower_than_inline_below_us_always_runs_in_the_pool(make_batcher: Factory) -> None:
    model = ThreadRecorder()
    model.delay_s = 0.005
    batcher = make_batcher(model, max_batch_size=8, inline_below_us=1000)
    for i in range(3):
        assert_doubled(await batcher.submit(rows(1, i), 1), rows(1, i))

    assert threading.current_thread().name not in model.threads


async def test_a_model_that_slows_down_goes_back_to_the_pool(make_batcher: Factory) -> None:
    model = ThreadRecorder()
    batcher = make_batcher(model, max_batch_size=8, inline_below_us=2000)
    for i in range(3):
        await batcher.submit(rows(1, i), 1)
    model.delay_s = 0.05  # one slow call lifts the moving average far above 2 ms
    for i in range(2):
        assert_doubled(await batcher.submit(rows(1, i), 1), rows(1, i))

    loop_thread = threading.current_thread().name
    assert model.threads[1:4] == [loop_thread] * 3
    assert model.threads[4] != loop_thread


async def test_inline_batches_answer_each_request_and_a_failure_fails_only_its_own(make_batcher: Factory) -> None:
    stats = ModelStats()
    model = GatedRun(open_=True, error=RuntimeError("boom"))
    batcher = make_batcher(model, stats, max_batch_size=8, inline_below_us=50_000)
    await batcher.submit(rows(1, 0), 1)  # measured once, in the pool

    requests = [rows(1, i) for i in range(1, 6)]
    answers = await asyncio.gather(*(batcher.submit(r, 1) for r in requests))
    with pytest.raises(InferenceFailed, match="boom"):
        await batcher.submit({"x": -rows(1, 9)["x"]}, 1)

    for answer, request in zip(answers, requests, strict=True):
        assert_doubled(answer, request)
    assert sum(model.sizes) == 7
    assert stats.inference_count == 6


async def test_a_request_that_comes_alone_runs_at_once_when_nothing_could_join_it(make_batcher: Factory) -> None:
    stats = ModelStats()
    model = ThreadRecorder()
    batcher = make_batcher(model, stats, max_batch_size=8, inline_below_us=50_000)
    await batcher.submit(rows(1, 0), 1)  # measured once, in the pool

    future = batcher.enqueue(rows(2, 1), 2, alone=True)

    assert future.done(), "a lone request on an idle inline model waited for the dispatcher"
    assert_doubled(future.result(), rows(2, 1))
    assert model.threads[1] == threading.current_thread().name
    assert (stats.execution_count, stats.inference_count) == (2, 3)


async def test_a_request_that_comes_alone_still_queues_behind_others(make_batcher: Factory) -> None:
    model = GatedRun(open_=True)
    batcher = make_batcher(model, max_batch_size=8, inline_below_us=50_000)
    await batcher.submit(rows(1, 0), 1)

    queued = batcher.enqueue(rows(1, 1), 1)
    alone = batcher.enqueue(rows(1, 2), 1, alone=True)

    assert not alone.done()  # it joins the request queued before it
    assert_doubled(await alone, rows(1, 2))
    assert_doubled(await queued, rows(1, 1))
    assert model.sizes == [1, 2]


async def test_a_request_that_comes_alone_waits_for_a_model_off_the_loop_or_under_a_delay(
    make_batcher: Factory,
) -> None:
    slow = make_batcher(ThreadRecorder(), max_batch_size=8, inline_below_us=0)
    held = make_batcher(ThreadRecorder(), max_batch_size=8, inline_below_us=50_000, max_queue_delay_ms=1)
    for batcher in (slow, held):
        await batcher.submit(rows(1, 0), 1)

        future = batcher.enqueue(rows(1, 1), 1, alone=True)

        assert not future.done()
        assert_doubled(await future, rows(1, 1))


async def test_a_request_that_comes_alone_and_fails_fails_at_once(make_batcher: Factory) -> None:
    model = GatedRun(open_=True, error=RuntimeError("boom"))
    batcher = make_batcher(model, max_batch_size=8, inline_below_us=50_000)
    await batcher.submit(rows(1, 0), 1)

    future = batcher.enqueue({"x": -rows(1, 1)["x"]}, 1, alone=True)

    assert future.done()
    with pytest.raises(InferenceFailed, match="boom"):
        future.result()
    assert_doubled(await batcher.submit(rows(1, 2), 1, alone=True), rows(1, 2))  # the batcher serves on


async def test_fifty_requests_whose_callers_left_behind_a_running_batch_never_run_and_are_counted(
    make_batcher: Factory,
) -> None:
    model = GatedRun()
    reasons: list[str] = []
    batcher = make_batcher(model, max_batch_size=8, observe_abandoned=reasons.append)
    running = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await model.started()
    hung_up = threading.Event()
    futures = [batcher.enqueue(rows(1, i), 1, gone=hung_up.is_set if i % 3 == 0 else None) for i in range(1, 51)]
    await until(lambda: batcher.queued == 50, "fifty requests queued behind the running batch")

    hung_up.set()  # the HTTP callers: read when a batch forms
    for i, future in enumerate(futures, start=1):
        if i % 3 == 1:
            future.cancel()  # a cancelled gRPC call cancels its handler's task, and so the awaited future
        elif i % 3 == 2:
            future.set_exception(DeadlineExceeded("passed"))  # what the manager's timer does
    model.gate.set()
    assert_doubled(await running, rows(1, 0))
    await until(lambda: len(reasons) == 50, "every abandoned request counted")
    await asyncio.gather(*futures, return_exceptions=True)

    assert model.sizes == [1], "a request whose caller had left ran"
    assert sorted(reasons) == ["cancelled"] * 17 + ["deadline"] * 17 + ["disconnected"] * 16
    assert all(isinstance(f.exception(), ClientDisconnected) for f in futures[2::3])


async def test_a_request_whose_caller_leaves_while_its_batch_waits_for_a_thread_is_counted_not_run(
    make_batcher: Factory, executor: ThreadPoolExecutor
) -> None:
    model = GatedRun(open_=True)
    reasons: list[str] = []
    batcher = make_batcher(model, max_batch_size=8, observe_abandoned=reasons.append)
    blocker = threading.Event()
    occupied = [executor.submit(blocker.wait, 30) for _ in range(2)]  # both of the pool's threads busy

    future = batcher.enqueue(rows(1, 0), 1)
    await until(lambda: batcher.queued == 0, "the batch taken, waiting for a thread")
    future.cancel()
    blocker.set()
    for busy in occupied:
        busy.result(30)
    await until(lambda: reasons == ["cancelled"], "the cancelled request counted")

    assert model.sizes == []


# -- statistics and construction ---------------------------------------------------------------------


async def test_stats_and_observe_batch_count_every_batch_by_its_samples(make_batcher: Factory) -> None:
    model = GatedRun()
    stats = ModelStats()
    observed: list[int] = []
    waits: list[float] = []

    def observe(samples: int, compute_s: float, queued_s: list[float]) -> None:
        assert compute_s > 0
        observed.append(samples)
        waits.extend(queued_s)

    batcher = make_batcher(model, stats, max_batch_size=8, observe_batch=observe)

    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await model.started()
    later = [asyncio.create_task(batcher.submit(rows(n, i), n)) for i, n in ((1, 2), (2, 1), (3, 3))]
    await until(lambda: batcher.queued == 3, "three requests queued")
    model.gate.set()
    await asyncio.gather(first, *later)

    assert model.sizes == [1, 6]
    assert observed == [1, 6]
    assert len(waits) == 4
    assert all(w >= 0 for w in waits)
    assert max(waits) > 0  # the three later ones waited for the first batch
    assert stats.execution_count == 2
    assert stats.inference_count == 7
    assert sorted(stats.batches) == [1, 6]
    for size in (1, 6):
        assert stats.batches[size].compute_infer.count == 1
        assert stats.batches[size].compute_input.count == 1
    # Request-level durations count requests (4), batch-level ones count runtime calls.
    assert stats.compute_infer.count == 4
    assert stats.queue.count == 4
    assert stats.compute_infer.ns > 0


async def test_a_failed_batch_is_not_counted_as_an_execution(make_batcher: Factory) -> None:
    stats = ModelStats()
    observed: list[int] = []
    model = GatedRun(open_=True, error=RuntimeError("boom"))
    batcher = make_batcher(model, stats, max_batch_size=8, observe_batch=lambda n, *_: observed.append(n))

    with pytest.raises(InferenceFailed, match="boom"):
        await batcher.submit({"x": -rows(2, 1)["x"]}, 2)
    await batcher.submit(rows(1, 0), 1)

    assert stats.execution_count == 1
    assert stats.inference_count == 1
    assert observed == [1]


def test_a_batcher_is_built_outside_any_event_loop() -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher("test", double, pool, ModelStats(), max_batch_size=4, preferred_batch_sizes=(2, 4))
    assert batcher.queued == 0


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"max_batch_size": -1}, "non-negative"),
        ({"max_batch_size": 4, "max_queue_delay_ms": -1.0}, "non-negative"),
        ({"max_batch_size": 4, "max_queue_size": -1}, "non-negative"),
        ({"max_batch_size": 4, "instance_count": 0}, "instance_count at least 1"),
        (
            {"max_batch_size": 4, "preferred_batch_sizes": (2, 8)},
            r"preferred_batch_sizes \(2, 8\) exceed max_batch_size 4",
        ),
    ],
)
def test_the_constructor_rejects_invalid_limits(limits: dict[str, Any], problem: str) -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match=problem):
        Batcher("test", double, pool, ModelStats(), **limits)


async def test_close_does_not_wait_out_the_queue_delay(executor: ThreadPoolExecutor) -> None:
    """A batch held back to fill (here for up to 60 s) leaves at once when the model unloads."""
    batcher = Batcher(
        "m", lambda inputs: {"y": inputs["x"] * 2}, executor, ModelStats(), max_batch_size=8, max_queue_delay_ms=60_000
    )
    pending = asyncio.create_task(batcher.submit({"x": np.ones((1, 2), np.float32)}, 1))
    await until(lambda: batcher.queued == 1, "the request is queued")
    await asyncio.wait_for(batcher.close(), timeout=10)
    np.testing.assert_array_equal((await pending)["y"], np.full((1, 2), 2, np.float32))


# -- out of memory -----------------------------------------------------------------------------------


class MemoryLimited:
    """``y = 2 x`` that raises like a runtime out of memory on calls above ``limit`` samples."""

    def __init__(self, limit: int, error: Exception) -> None:
        self.limit, self.error, self.sizes = limit, error, list[int]()

    def __call__(self, inputs: Arrays) -> Arrays:
        self.sizes.append(len(inputs["x"]))
        if len(inputs["x"]) > self.limit:
            raise self.error
        return double(inputs)


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("Failed to allocate memory for requested buffer of size 268435456"),
    ],
)
async def test_a_batch_out_of_memory_is_retried_as_two_halves_before_any_request_fails(
    make_batcher: Factory, error: Exception
) -> None:
    gate = GatedRun(transform=lambda inputs: inputs)
    model = MemoryLimited(4, error)
    batcher = make_batcher(lambda inputs: model(gate(inputs)), max_batch_size=8)  # gate: let requests pile up
    requests = [rows(1, 0), *(rows(2, marker) for marker in range(1, 4))]

    first = asyncio.create_task(batcher.submit(requests[0], 1))
    await gate.started()
    later = [asyncio.create_task(batcher.submit(r, 2)) for r in requests[1:]]
    await until(lambda: batcher.queued == 3, "three requests queued behind the first")
    gate.gate.set()
    results = await asyncio.gather(first, *later)

    assert model.sizes == [1, 6, 3, 3]  # the batch of 6 failed; its halves ran
    for result, request in zip(results, requests, strict=True):
        assert_doubled(result, request)


async def test_what_still_runs_out_of_memory_split_in_two_is_503_retryable_for_those_requests_only(
    make_batcher: Factory,
) -> None:
    gate = GatedRun(transform=lambda inputs: inputs)
    model = MemoryLimited(1, MemoryError())
    batcher = make_batcher(lambda inputs: model(gate(inputs)), max_batch_size=8)

    first = asyncio.create_task(batcher.submit(rows(1, 0), 1))
    await gate.started()
    later = [asyncio.create_task(batcher.submit(rows(2, m), 2)) for m in (1, 2)]
    await until(lambda: batcher.queued == 2, "two requests queued behind the first")
    gate.gate.set()
    assert_doubled(await first, rows(1, 0))
    for task in later:
        with pytest.raises(OutOfMemory, match=r"batch of 4 samples and on its halves.*retry later"):
            await task
    assert_doubled(await batcher.submit(rows(1, 9), 1), rows(1, 9))

"""A per-model dynamic batcher that wraps a runtime's ``infer`` without touching it.

Requests queue in arrival order. Whenever an instance is free, the batcher takes the oldest request
and every later one with the same non-batch shapes and datatypes, up to ``max_batch_size`` samples,
concatenates them along the first axis, runs them, and hands each request its slice of the outputs.
A batch runs in the thread pool, unless the model's recent batches took less than ``inline_below_us``:
handing a batch to a thread and back costs some 100 µs of CPU, more than a small model's whole
inference, so such batches run on the event loop itself, where they hold it no longer than the
hand-off would have. With ``max_queue_delay_ms`` of 0 (the default, as in Triton) it waits for
nothing: requests that arrive while instances are busy form the next batch, so batches grow with
load and an idle server answers at once. A positive delay is the longest the oldest request may be
held for its batch to reach its target size; it is held only while more requests are expected to
join in time, judged from the measured arrival rate and how many requests are in flight
(``batching/delay.py``), so a lone client calling in a loop is never held and a crowd of them still
fills its batches. A failure in a batch fails exactly the requests in it.

Time is read from ``clock`` and waited on through ``call_later`` (by default the event loop's), so
a test can stand in for both and decide exactly when a held batch looks again.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, Status, StatusCode, Tracer

from modelserve.batching.delay import Traffic, hold_until
from modelserve.batching.priority import demote, insert
from modelserve.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    InferenceFailed,
    ModelNotReady,
    ModelserveError,
    OutOfMemory,
    Overloaded,
)
from modelserve.models.stats import ModelStats

Arrays = dict[str, np.ndarray[Any, Any]]


class Timer(Protocol):
    """What ``call_later`` returns: a pending call that can be called off."""

    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], object]], Timer]


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    size: int
    key: Hashable
    future: asyncio.Future[Arrays]
    enqueued_ns: int
    gone: Callable[[], bool] | None = None  # whether its caller has hung up
    caller: SpanContext | None = None  # the request's span, when traced
    waiting: Span | None = None  # its queue span, ended when its batch starts
    level: int = 0  # its priority level (batching/priority.py); 0 where the model has none
    delay_at_ns: int = 0  # when a DELAY queue policy moves it behind the others (0: never)


# What running a batch gave: the requests it ran, their outputs, and the nanoseconds spent joining
# their inputs and computing.
_Ran = tuple[list[_Pending], Arrays, int, int]


class Batcher:
    """Queues requests for one model version and runs them in batches on ``executor``."""

    def __init__(
        self,
        name: str,
        run: Callable[[Arrays], Arrays],
        executor: Executor,
        stats: ModelStats,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float = 0.0,
        preferred_batch_sizes: tuple[int, ...] = (),
        adaptive_delay: bool = True,
        max_queue_size: int = 0,
        instance_count: int = 1,
        priority_levels: int = 0,
        background: Executor | None = None,
        observe_batch: Callable[[int, float, list[float]], None] | None = None,
        observe_abandoned: Callable[[str], None] | None = None,
        inline_below_us: float = 0.0,
        tracer: Tracer | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
        call_later: CallLater | None = None,
    ) -> None:
        if max_batch_size < 0 or max_queue_delay_ms < 0 or max_queue_size < 0 or instance_count < 1:
            raise ValueError("batcher limits must be non-negative and instance_count at least 1")
        if any(size > max_batch_size for size in preferred_batch_sizes):
            raise ValueError(f"preferred_batch_sizes {preferred_batch_sizes} exceed max_batch_size {max_batch_size}")
        self.name = name
        self._run = run
        self._executor = executor
        self._stats = stats
        self._max_samples = max(1, max_batch_size)
        self._batching = max_batch_size > 0
        self._delay_ns = int(max_queue_delay_ms * 1_000_000)
        self._adaptive = adaptive_delay
        self._target = max(preferred_batch_sizes, default=self._max_samples)
        self._max_queue = max_queue_size
        self._levels = priority_levels
        # Where the batches below the top level run (batching/priority.py), when the model has more than one;
        # the top level then also has an instance of its own beyond instance_count, its lane.
        self._background = background if priority_levels > 1 else None
        self._lane_busy = False
        self._delaying = False  # whether a request with a DELAY queue policy's timeout has been queued
        self._instances = instance_count
        self._observe_batch = observe_batch
        self._observe_abandoned = observe_abandoned
        self._inline_below_ns = inline_below_us * 1000
        self._tracer = tracer
        self._clock = clock
        self._call_later = call_later
        # A batch is held only under a delay; the traffic it is judged by is measured only then.
        self._holds = self._delay_ns > 0 and self._batching
        self._traffic = Traffic(window=2 * self._target)
        self._in_batches = 0  # requests taken into batches that have not finished
        self._compute_ns: float | None = None  # moving average of recent batches' compute time
        self._queue: deque[_Pending] = deque()
        # Created inside the running loop on first use, never at construction time.
        self._wakeup: asyncio.Event | None = None
        self._free: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Future[Any]] = set()
        self._closing = False

    @property
    def queued(self) -> int:
        """Requests waiting for an instance."""
        return len(self._queue)

    async def submit(
        self, inputs: Arrays, size: int, gone: Callable[[], bool] | None = None, *, alone: bool = False
    ) -> Arrays:
        """``enqueue``, awaited."""
        return await self.enqueue(inputs, size, gone, alone=alone)

    def enqueue(
        self,
        inputs: Arrays,
        size: int,
        gone: Callable[[], bool] | None = None,
        *,
        alone: bool = False,
        level: int = 0,
        level_max_queue: int = 0,
        delay_ns: int = 0,
    ) -> asyncio.Future[Arrays]:
        """Queue one validated request of ``size`` samples: the future of its outputs.

        ``gone`` says whether the caller has hung up. A request whose caller has leaves the queue unrun,
        with ClientDisconnected, when its batch is formed: the last moment before it would run. Asking
        a flag then costs nothing; watching each waiting caller cost a task per request.

        ``alone`` says the caller's requests reach the batcher one at a time, never several in one turn
        of the event loop (gRPC's unary calls: grpc.aio accepts one call per round trip of its completion
        queue). Such a request runs here and now, its future already done, when nothing could join its
        batch anyway: the model runs on the loop, nothing is queued or running, and no delay is set. It
        then skips the dispatcher's turn, and its caller never suspends: under grpc.aio a suspension and
        the batcher's hand-offs cost a unary call some 100 µs of CPU.

        ``level`` is the request's priority level, ``level_max_queue`` the most requests its level may
        hold (0: no bound of its own), ``delay_ns`` how long it may wait before a DELAY queue policy moves
        it behind the others (0: never); batching/priority.py.
        """
        if self._closing:
            raise ModelNotReady(f"model '{self.name}' is unloading")
        if self._max_queue and len(self._queue) >= self._max_queue:
            raise Overloaded(
                f"model '{self.name}' has {len(self._queue)} requests queued (max_queue_size); retry later"
            )
        if level_max_queue and (held := sum(1 for p in self._queue if p.level == level)) >= level_max_queue:
            raise Overloaded(
                f"model '{self.name}' has {held} requests of priority level {level} queued (its queue policy's "
                "max_queue_size); retry later"
            )
        if self._task is None:
            self._wakeup, self._free = asyncio.Event(), asyncio.Semaphore(self._instances)
            if self._call_later is None:
                self._call_later = asyncio.get_running_loop().call_later
            self._task = asyncio.create_task(self._dispatch(), name=f"batcher:{self.name}")
        assert self._wakeup is not None
        key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items()) if self._batching else None
        future: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        now = self._clock()
        pending = _Pending(inputs, size, key, future, now, gone, level=level)
        if delay_ns:
            pending.delay_at_ns, self._delaying = now + delay_ns, True
        if self._tracer is not None and (caller := trace.get_current_span()).is_recording():
            pending.caller = caller.get_span_context()
            pending.waiting = self._tracer.start_span("queue", attributes={"modelserve.model": self.name})
        if alone and self._inline and not self._holds and not self._queue and not self._in_batches:
            self._in_batches += 1
            self._settle([pending], *self._start([pending]))
            return future
        if self._levels:
            insert(self._queue, pending)
        else:
            self._queue.append(pending)
        if self._holds:
            self._traffic.arrived(now, len(self._queue) + self._in_batches)
        if level == 1 and self._background is not None:
            self._start_lane()
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, then stop."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()  # a batch waiting to fill leaves now
        while self._queue or self._running:
            if self._running:
                await asyncio.wait(set(self._running))
            else:
                await asyncio.sleep(0)  # the dispatcher has yet to pick the queued ones up
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _dispatch(self) -> None:
        assert self._free is not None
        while True:
            await self._free.acquire()
            batch = await self._next_batch()
            self._in_batches += len(batch)
            if self._inline:
                # On the loop, a batch runs before anything else does: a second one taken from the queue
                # now would only split it in two smaller batches, whatever instance_count allows.
                await self._execute(batch, None)
                continue
            task = asyncio.create_task(self._execute(batch, self._background if batch[0].level > 1 else None))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Pending]:
        assert self._wakeup is not None
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._holds:
                await self._fill()
            batch = self._take()
            if batch:
                return batch

    async def _fill(self) -> None:
        """Hold the oldest request while more are expected to join its batch before its delay runs out;
        every arrival, and the time the rule names, asks again."""
        assert self._wakeup is not None
        assert self._call_later is not None
        traffic = self._traffic
        while not self._closing:
            head, now = self._queue[0], self._clock()
            deadline = head.enqueued_ns + self._delay_ns
            missing = self._target - sum(p.size for p in self._queue if p.key == head.key)
            until = hold_until(
                now,
                deadline,
                missing=missing,
                in_flight=len(self._queue) + self._in_batches,
                # A fixed delay is the rule with no population known: the whole delay, or the target.
                population=traffic.population if self._adaptive else math.inf,
                last_arrival_ns=traffic.last_ns,
                gap_ns=traffic.gap_ns,
            )
            if until is None:
                return
            self._wakeup.clear()
            timer = self._call_later((until - now) / 1e9, self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                timer.cancel()

    def _start_lane(self) -> None:
        """Run the top level's next batch on its lane, if the lane is free and one is queued: here and
        now, as the request arrives or the lane's last batch ends, without waiting for the dispatcher's
        turn on the event loop, which a crowd of lower-level requests keeps busy."""
        if self._lane_busy or self._inline or not self._tidy() or self._queue[0].level != 1:
            return
        batch = self._form()
        self._lane_busy, self._in_batches = True, self._in_batches + len(batch)
        span, start = self._start(batch)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._running.add(done)
        done.add_done_callback(self._running.discard)

        def ended(ran: _Ran | Exception) -> None:
            self._settle(batch, span, start, ran)
            self._lane_busy = False
            done.set_result(None)
            self._start_lane()

        def run() -> None:
            try:
                ran: _Ran | Exception = self._run_live(batch)
            except Exception as exc:
                ran = exc
            loop.call_soon_threadsafe(ended, ran)

        self._executor.submit(run)

    def _tidy(self) -> bool:
        """Whether anything is queued, once the requests whose DELAY timeout passed have moved behind
        the rest and those whose callers left are gone from its head."""
        if self._delaying:
            demote(self._queue, self._clock(), self._levels + 1)
        while self._queue and self._left(self._queue[0]):
            self._queue.popleft()
        return bool(self._queue)

    def _take(self) -> list[_Pending]:
        """The oldest live request of the highest level plus later compatible ones, up to the batch
        limit, in the queue's order."""
        return self._form() if self._tidy() else []

    def _form(self) -> list[_Pending]:
        """``_take``'s batch from a queue already tidied, whose head is live."""
        head = self._queue[0]
        if not self._batching:
            return [self._queue.popleft()]
        batch, rest, samples = [], deque[_Pending](), 0
        for pending in self._queue:
            if self._left(pending):
                continue
            if pending.key == head.key and pending.level == head.level and samples + pending.size <= self._max_samples:
                batch.append(pending)
                samples += pending.size
            else:
                rest.append(pending)
        self._queue = rest
        return batch

    def _left(self, pending: _Pending) -> bool:
        """Whether the caller of ``pending`` stopped waiting (its deadline passed, or it hung up), so that
        it must leave the queue unrun; its trace says so."""
        if not pending.future.done():
            if pending.gone is None or not pending.gone():
                return False
            pending.future.set_exception(
                ClientDisconnected(f"the caller of model '{self.name}' hung up while the request was queued")
            )
        self._abandon(pending)
        return True

    def _abandon(self, pending: _Pending) -> None:
        """A request whose caller stopped waiting leaves without running: its trace says so, and the
        metric counts why (``abandoned_reason``)."""
        if pending.waiting is not None:
            pending.waiting.set_status(Status(StatusCode.ERROR, "the caller stopped waiting before a batch ran it"))
            pending.waiting.end()
            pending.waiting = None
        if self._observe_abandoned is not None:
            self._observe_abandoned(abandoned_reason(pending.future))

    @property
    def _inline(self) -> bool:
        return self._compute_ns is not None and self._compute_ns < self._inline_below_ns

    async def _execute(self, batch: list[_Pending], background: Executor | None) -> None:
        """Run ``batch`` on the loop, on ``background`` (a batch below the top level) or on the executor."""
        assert self._free is not None
        span, start = self._start(batch)
        ran: _Ran | Exception = InferenceFailed(f"model '{self.name}' stopped before its batch ran")
        try:
            if self._inline:
                ran = self._run_live(batch)
            else:
                executor = background or self._executor
                ran = await asyncio.get_running_loop().run_in_executor(executor, self._run_live, batch)
        except Exception as exc:
            ran = exc
        finally:
            self._settle(batch, span, start, ran)
            self._free.release()

    def _start(self, batch: list[_Pending]) -> tuple[Span | None, int]:
        """A batch about to run: its requests' queue times counted, its span opened; when it started."""
        span = self._batch_span(batch) if self._tracer is not None else None
        start = self._clock()
        for pending in batch:
            self._stats.queue.add(start - pending.enqueued_ns)
        return span, start

    def _settle(
        self, batch: list[_Pending], span: Span | None, start: int, ran: _Ran | Exception | None = None
    ) -> None:
        """Hand each request of a batch its outputs, or the batch's error; the batch is then over.
        Without ``ran`` the batch runs here, on the loop."""
        taken = len(batch)
        try:
            if ran is None:
                ran = self._run_live(batch)
            if isinstance(ran, Exception):
                raise ran
            live, outputs, join_ns, compute_ns = ran
            if len(live) < len(batch):  # callers that gave up while the batch waited for a thread
                ran_ids = {id(p) for p in live}
                for pending in batch:
                    if id(pending) not in ran_ids:
                        self._abandon(pending)
            batch = live
            if not batch:
                return  # nothing ran
            previous = self._compute_ns
            self._compute_ns = compute_ns if previous is None else 0.8 * previous + 0.2 * compute_ns
            done = time.perf_counter_ns()
            samples = sum(p.size for p in batch)
            results = _split(outputs, [p.size for p in batch], samples) if self._batching else [outputs]
            self._stats.record_batch(len(batch), samples, join_ns, compute_ns, time.perf_counter_ns() - done)
            if self._observe_batch is not None:
                self._observe_batch(samples, compute_ns / 1e9, [(start - p.enqueued_ns) / 1e9 for p in batch])
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
        except Exception as exc:
            error = exc if isinstance(exc, ModelserveError) else InferenceFailed(f"model '{self.name}' failed: {exc}")
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, error.message))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        finally:
            if span is not None:
                span.end()
            self._in_batches -= taken

    def _batch_span(self, batch: list[_Pending]) -> Span | None:
        """End the requests' queue spans; open the batch's span, in the first traced request's trace."""
        assert self._tracer is not None
        callers = [p.caller for p in batch if p.caller is not None]
        for pending in batch:
            if pending.waiting is not None:
                pending.waiting.end()
                pending.waiting = None
        if not callers:
            return None  # no request in it is traced: the batch is not either
        return self._tracer.start_span(
            "batch",
            trace.set_span_in_context(NonRecordingSpan(callers[0])),
            links=[Link(caller) for caller in callers],
            attributes={
                "modelserve.model": self.name,
                "modelserve.batch.requests": len(batch),
                "modelserve.batch.samples": sum(p.size for p in batch),
                "modelserve.batch.inline": self._inline,
            },
        )

    def _run_live(self, batch: list[_Pending]) -> _Ran:
        """Run the requests of ``batch`` whose callers still wait, as late as possible: a batch can wait
        for a free thread past its requests' deadlines, and those must not run. Returns the requests
        run, their outputs, and the nanoseconds spent joining inputs and computing."""
        started = time.perf_counter_ns()
        live = [p for p in batch if not p.future.done()]  # only read here: the loop owns the futures
        if not live:
            return live, {}, 0, 0
        inputs = live[0].inputs if len(live) == 1 else _concatenate([p.inputs for p in live])
        joined = time.perf_counter_ns()
        try:
            outputs = self._run(inputs)
        except Exception as exc:
            if not _out_of_memory(exc):
                raise
            outputs = self._run_halves(inputs, sum(p.size for p in live), exc)
        return live, outputs, joined - started, time.perf_counter_ns() - joined

    def _run_halves(self, inputs: Arrays, samples: int, error: Exception) -> Arrays:
        """Retry a batch that ran out of memory as two halves, once, before any of its requests fails."""
        if not self._batching or samples < 2:
            raise OutOfMemory(f"model '{self.name}' ran out of memory on {samples} sample(s): {error}; retry later")
        half = samples // 2
        try:
            first = self._run({n: a[:half] for n, a in inputs.items()})
            second = self._run({n: a[half:] for n, a in inputs.items()})
        except Exception as exc:
            if not _out_of_memory(exc):
                raise
            raise OutOfMemory(
                f"model '{self.name}' ran out of memory on a batch of {samples} samples and on its halves: {exc}; "
                "retry later, or lower the model's max_batch_size"
            ) from None
        return {n: np.concatenate([first[n], second[n]]) for n in first}


def abandoned_reason(future: asyncio.Future[Arrays]) -> str:
    """Why a request's caller stopped waiting: ``cancelled`` (its task was, as grpc.aio does when a call
    is cancelled), ``deadline`` (its time ran out) or ``disconnected`` (its HTTP client hung up)."""
    if future.cancelled():
        return "cancelled"
    return "deadline" if isinstance(future.exception(), DeadlineExceeded) else "disconnected"


def _out_of_memory(error: Exception) -> bool:
    """Whether a runtime's error is an allocation failure: Python's, PyTorch's (CUDA or CPU) or ONNX
    Runtime's, which raise their own types with these messages."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "failed to allocate memory" in text


def _concatenate(requests: list[Arrays]) -> Arrays:
    return {name: np.concatenate([r[name] for r in requests]) for name in requests[0]}


def _split(outputs: Arrays, sizes: list[int], samples: int) -> list[Arrays]:
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != samples:
            raise InferenceFailed(
                f"output '{name}' has shape {list(array.shape)}; expected a first dimension of {samples}"
            )
    if len(sizes) == 1:
        return [outputs]
    bounds = np.cumsum([0, *sizes])
    return [{n: a[lo:hi] for n, a in outputs.items()} for lo, hi in itertools.pairwise(bounds)]

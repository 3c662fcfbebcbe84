"""The sequence batcher: a stateful model's requests run through ``batching/sequences.py``'s plan, the
control inputs and implicit state filled in for every row, on the inference threads.

It replaces the dynamic batcher for a model with ``sequence_batching``. A batch is assembled on the
event loop: the requests' own inputs joined along the batch axis, each control input (START, END,
READY, CORRID) one value per row, each state input the row's sequence's state (zeros at its start).
Under the direct strategy a row whose slot has no request waiting is a null row, READY false and its
inputs zeros, as Triton's direct batcher fills it, so that a sequence keeps its row. A row whose caller
gave up before its batch ran is run as a null row too, leaving its sequence's state as it was. The
model's state outputs become the rows' next states and are never answered.

Time is read from ``clock`` and waited on through ``call_later``, so a test decides when an idle
sequence is released and when a held batch looks again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelserve.batching.batcher import Arrays, CallLater, Timer
from modelserve.batching.sequences import Sequence, SequenceId, Sequences, Step, Taken
from modelserve.errors import InferenceFailed, InvalidInput, ModelNotReady, ModelserveError
from modelserve.models.stats import ModelStats
from modelserve.types import numpy_dtype

log = logging.getLogger("modelserve.batching")

CONTROL_KINDS = ("START", "END", "READY", "CORRID")


@dataclass(frozen=True, slots=True)
class Control:
    """A control input: ``kind`` one of CONTROL_KINDS, its V2 datatype, and (but for CORRID) the values
    for false and true."""

    name: str
    kind: str
    datatype: str
    false: Any = 0
    true: Any = 1


@dataclass(frozen=True, slots=True)
class State:
    """An implicit state: fed as ``input``, taken back from ``output``; ``dims`` without the batch axis."""

    input: str
    output: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SequenceSettings:
    """A model version's ``sequence_batching``, with what the scheduler needs of its spec."""

    direct: bool
    max_batch_size: int  # 0: no batch axis, a batch is one request
    instance_count: int = 1
    idle_us: int = 1_000_000
    max_candidates: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    controls: tuple[Control, ...] = ()
    states: tuple[State, ...] = field(default_factory=tuple)

    @property
    def fed(self) -> set[str]:
        """The model inputs the server fills, which a client does not send."""
        return {c.name for c in self.controls} | {s.input for s in self.states}

    @property
    def kept(self) -> set[str]:
        """The model outputs the server keeps as state, which a client is not answered."""
        return {s.output for s in self.states}


@dataclass(slots=True)
class _Request:
    inputs: Arrays
    future: asyncio.Future[Arrays]


class SequenceScheduler:
    """Runs the requests of one stateful model version, sequence by sequence, on ``executor``."""

    def __init__(
        self,
        name: str,
        run: Callable[[Arrays], Arrays],
        executor: Executor,
        stats: ModelStats,
        settings: SequenceSettings,
        *,
        clock: Callable[[], int] = time.perf_counter_ns,
        call_later: CallLater | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._executor = executor
        self._stats = stats
        self.settings = settings
        self._rows = max(1, settings.max_batch_size)
        self._batched = settings.max_batch_size > 0
        self.sequences: Sequences[_Request] = Sequences(
            direct=settings.direct,
            rows=self._rows,
            instances=settings.instance_count,
            max_candidates=settings.max_candidates,
            idle_ns=settings.idle_us * 1000,
        )
        self._target = min(max(settings.preferred_batch_sizes, default=self._rows), self._rows)
        self._clock = clock
        self._call_later = call_later
        self._busy: set[int] = set()  # direct: instances running a batch
        self._running: set[asyncio.Task[None]] = set()
        self._idle_timer: Timer | None = None
        self._hold_timer: Timer | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        """Requests waiting to run."""
        return len(self.sequences.pending())

    def enqueue(self, inputs: Arrays, sequence_id: SequenceId, start: bool, end: bool) -> asyncio.Future[Arrays]:
        """Queue one validated request of a sequence: the future of its outputs (state outputs left out)."""
        if self._closing:
            raise ModelNotReady(f"model '{self.name}' is unloading")
        loop = asyncio.get_running_loop()
        if self._call_later is None:
            self._call_later = loop.call_later
        corrid = next((c for c in self.settings.controls if c.kind == "CORRID"), None)
        if corrid is not None and corrid.datatype != "BYTES" and isinstance(sequence_id, str):
            raise InvalidInput(
                f"model '{self.name}' takes its sequence ids as {corrid.datatype} (its CONTROL_SEQUENCE_CORRID); "
                f"sequence_id {sequence_id!r} is a string"
            )
        future: asyncio.Future[Arrays] = loop.create_future()
        key = tuple((n, a.dtype.str, a.shape[1:] if self._batched else a.shape) for n, a in inputs.items())
        step = Step(start, end, self._clock(), key, _Request(inputs, future))
        sequence = self.sequences.arrive(self.name, sequence_id, step)
        if start and (sequence.running or len(sequence.queue) > 1):
            log.warning(
                "sequence %s of model %s started again before it ended; its earlier requests run first",
                sequence_id,
                self.name,
            )
        self._pump()
        return future

    async def close(self) -> None:
        """Refuse new requests, let running batches finish, then fail what is still queued."""
        self._closing = True
        while self._running:
            await asyncio.wait(set(self._running))
        for timer in (self._idle_timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        for step in self.sequences.pending():
            if not step.payload.future.done():
                step.payload.future.set_exception(ModelNotReady(f"model '{self.name}' is unloading"))

    # -- scheduling ------------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start every batch that may run now; arm the timers for what must happen later."""
        if self._closing:
            return
        settings = self.settings
        if settings.direct:
            for instance in range(settings.instance_count):
                if instance not in self._busy and (taken := self.sequences.take(instance, self._rows)):
                    self._busy.add(instance)
                    self._start(instance, taken)
        else:
            while len(self._running) < settings.instance_count and not self._held():
                taken = self.sequences.take(None, self._rows)
                if not taken:
                    break
                self._start(None, taken)
        self._arm_idle()

    def _held(self) -> bool:
        """Oldest: whether the next batch waits for more sequences to have a request ready, as it may while
        it holds fewer than its target and its oldest request has waited less than the delay."""
        delay_ns = self.settings.max_queue_delay_us * 1000
        ready, oldest = self.sequences.ready()
        if not delay_ns or oldest is None or ready >= self._target:
            return False
        wait_ns = oldest + delay_ns - self._clock()
        if wait_ns <= 0:
            return False
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        assert self._call_later is not None
        self._hold_timer = self._call_later(wait_ns / 1e9, self._pump)
        return True

    def _arm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if (at := self.sequences.next_idle_ns()) is not None and self._call_later is not None:
            self._idle_timer = self._call_later(max(0, at - self._clock()) / 1e9, self._release_idle)

    def _release_idle(self) -> None:
        self._idle_timer = None
        for sequence in self.sequences.idle(self._clock()):
            log.info("sequence %s of model %s released after max_sequence_idle_microseconds", sequence.id, self.name)
        self._pump()

    def _start(self, instance: int | None, taken: list[Taken[_Request]]) -> None:
        task = asyncio.get_running_loop().create_task(self._execute(instance, taken))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, instance: int | None, taken: list[Taken[_Request]]) -> None:
        started = self._clock()
        live = [t for t in taken if not t.step.payload.future.done()]  # their callers still wait
        try:
            if live:
                for item in live:
                    self._stats.queue.add(started - item.step.arrived_ns)
                inputs = self._assemble(taken, live)
                joined = self._clock()
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, inputs)
                computed = self._clock()
                self._answer(live, outputs)
                self._stats.record_batch(len(live), len(live), joined - started, computed - joined, 0)
        except Exception as exc:
            error = exc if isinstance(exc, ModelserveError) else InferenceFailed(f"model '{self.name}' failed: {exc}")
            for item in live:
                if not item.step.payload.future.done():
                    item.step.payload.future.set_exception(error)
        finally:
            self.sequences.finish(taken, self._clock())
            if instance is not None:
                self._busy.discard(instance)
            if (task := asyncio.current_task()) is not None:
                self._running.discard(task)  # before its done callback: this batch's instance is free now
            self._pump()

    # -- tensors ---------------------------------------------------------------------------------------

    def _assemble(self, taken: list[Taken[_Request]], live: list[Taken[_Request]]) -> Arrays:
        """The batch's inputs: the requests' rows, null rows where no live request is, controls and states."""
        size = max(t.row for t in taken) + 1 if self.settings.direct else len(taken)
        by_row: dict[int, Taken[_Request]] = {t.row: t for t in live}
        template = live[0].step.payload.inputs
        inputs: Arrays = {}
        for name, array in template.items():
            null = _null(array)
            rows = [by_row[r].step.payload.inputs[name] if r in by_row else null for r in range(size)]
            inputs[name] = np.concatenate(rows) if self._batched else rows[0]
        for control in self.settings.controls:
            inputs[control.name] = self._control(control, by_row, size)
        for state in self.settings.states:
            rows = [
                self._state_of(by_row[r].sequence, by_row[r].step.start, state) if r in by_row else self._initial(state)
                for r in range(size)
            ]
            inputs[state.input] = np.concatenate(rows) if self._batched else rows[0]
        return inputs

    def _control(self, control: Control, by_row: dict[int, Taken[_Request]], size: int) -> np.ndarray[Any, Any]:
        values: list[Any] = []
        for row in range(size):
            item = by_row.get(row)
            if control.kind == "CORRID":
                sequence_id = item.sequence.id if item is not None else 0
                values.append(str(sequence_id).encode() if control.datatype == "BYTES" else int(sequence_id))
                continue
            flag = (
                item is not None
                and {
                    "START": item.step.start,
                    "END": item.step.end,
                    "READY": True,
                }[control.kind]
            )
            values.append(control.true if flag else control.false)
        dtype = numpy_dtype(control.datatype)
        array = np.empty(size, dtype=object) if control.datatype == "BYTES" else np.empty(size, dtype=dtype)
        array[:] = values
        return array.reshape(size, 1) if self._batched else array.reshape(1)

    def _initial(self, state: State) -> np.ndarray[Any, Any]:
        shape = (1, *state.dims) if self._batched else state.dims
        return np.zeros(shape, dtype=numpy_dtype(state.datatype))

    def _state_of(self, sequence: Sequence[_Request], start: bool, state: State) -> np.ndarray[Any, Any]:
        """A sequence's state for its next request: zeros at its start, else what its last request left."""
        if start or state.input not in sequence.state:
            return self._initial(state)
        held: np.ndarray[Any, Any] = sequence.state[state.input]
        return held

    def _answer(self, live: list[Taken[_Request]], outputs: Arrays) -> None:
        """Each live request its row of the outputs; its sequence the row of each state output."""
        for state in self.settings.states:
            if state.output not in outputs:
                raise InferenceFailed(f"model '{self.name}' did not return its state output '{state.output}'")
        for item in live:
            row = {name: array[item.row : item.row + 1] if self._batched else array for name, array in outputs.items()}
            for state in self.settings.states:
                item.sequence.state[state.input] = np.array(row[state.output])  # owned, not a view of the batch
            if not item.step.payload.future.done():
                item.step.payload.future.set_result({n: a for n, a in row.items() if n not in self.settings.kept})


def _null(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A null row's input: zeros, or empty strings for BYTES."""
    if array.dtype.kind == "O":
        return np.full(array.shape, b"", dtype=object)
    return np.zeros_like(array)

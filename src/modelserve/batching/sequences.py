"""Which sequence's request runs when: the sequence batcher's bookkeeping as plain logic, without tensors,
threads or an event loop (batching/sequence_scheduler.py runs it).

A sequence is the requests of one ``sequence_id``, run strictly in order and one at a time. Under the
direct strategy each sequence owns a batch slot (an instance and a row) from its start until its end,
and sequences beyond the slots wait in a backlog for one. Under the oldest strategy any sequence may run
in any row; a batch takes the next requests of the sequences whose requests have waited longest, up to
``max_candidate_sequences`` sequences at once (the rest in the backlog). A sequence with nothing queued
or running for ``max_sequence_idle_microseconds`` is released, its slot freed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelserve.errors import InvalidInput

SequenceId = int | str
T = TypeVar("T")


def sequence_parameters(parameters: dict[str, Any], model: str) -> tuple[SequenceId, bool, bool]:
    """A request's ``sequence_id``, ``sequence_start`` and ``sequence_end`` for a sequence model, as
    tritonclient sends them; InvalidInput where the id is missing, 0 or empty, or a value has the wrong type."""
    sequence_id = parameters.get("sequence_id", 0)
    if (
        isinstance(sequence_id, bool)
        or not isinstance(sequence_id, int | str)
        or (isinstance(sequence_id, int) and not 0 <= sequence_id < 2**64)
    ):
        raise InvalidInput(f"parameter 'sequence_id' is {sequence_id!r}; send an unsigned 64-bit integer or a string")
    if sequence_id in (0, ""):
        raise InvalidInput(
            f"inference request to model '{model}' must specify a non-zero or non-empty correlation ID "
            "(parameter 'sequence_id'): the model is stateful (sequence_batching)"
        )
    flags = []
    for name in ("sequence_start", "sequence_end"):
        value = parameters.get(name, False)
        if not isinstance(value, bool):
            raise InvalidInput(f"parameter '{name}' is {value!r}; send true or false")
        flags.append(value)
    return sequence_id, flags[0], flags[1]


@dataclass(slots=True)
class Step(Generic[T]):
    """One request of a sequence, queued: its flags, when it arrived, what its shapes are (requests of
    different shapes never share a batch) and what the scheduler keeps of it."""

    start: bool
    end: bool
    arrived_ns: int
    key: Hashable
    payload: T


@dataclass(eq=False, slots=True)
class Sequence(Generic[T]):
    """A sequence the server holds: its queued requests, its slot (direct) and its implicit state."""

    id: SequenceId
    idle_since_ns: int
    slot: int | None = None  # direct: instance * rows + row, once it has one
    candidate: bool = False  # oldest: among the sequences batches are taken from
    running: bool = False  # a request of it is in a batch now
    queue: deque[Step[T]] = field(default_factory=deque)
    state: dict[str, Any] = field(default_factory=dict)  # implicit state by input name, kept by the runner

    @property
    def placed(self) -> bool:
        """Whether its requests may run: it holds a slot, or is a candidate; otherwise it is in the backlog."""
        return self.slot is not None or self.candidate

    @property
    def ending(self) -> bool:
        """Whether its last queued request ends it: a later one must start a sequence anew."""
        return bool(self.queue) and self.queue[-1].end


@dataclass(slots=True)
class Taken(Generic[T]):
    """A request taken into a batch, at ``row``."""

    row: int
    sequence: Sequence[T]
    step: Step[T]


class Sequences(Generic[T]):
    """The sequences of one model version, their slots and backlog; ``take`` forms the next batch."""

    def __init__(self, *, direct: bool, rows: int, instances: int, max_candidates: int, idle_ns: int) -> None:
        self.direct = direct
        self.rows = rows  # rows of a batch: max_batch_size, or 1 for a model without a batch dimension
        self.instances = instances
        self.max_candidates = max_candidates  # oldest: 0, no limit
        self.idle_ns = idle_ns
        self._by_id: dict[SequenceId, Sequence[T]] = {}
        self._free_slots = list(range(rows * instances))[::-1]  # popped lowest first
        self._backlog: deque[Sequence[T]] = deque()
        self._candidates = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, sequence_id: SequenceId) -> Sequence[T] | None:
        """The sequence of ``sequence_id``, if the server holds it."""
        return self._by_id.get(sequence_id)

    @property
    def backlog(self) -> int:
        """Sequences waiting for a slot (direct) or to become candidates (oldest)."""
        return len(self._backlog)

    def arrive(self, model: str, sequence_id: SequenceId, step: Step[T]) -> Sequence[T]:
        """Queue a request behind the others of its sequence, starting the sequence if it asks to;
        InvalidInput for a request that neither starts a sequence nor belongs to one the server holds."""
        sequence = self._by_id.get(sequence_id)
        if not step.start and (sequence is None or sequence.ending):
            raise InvalidInput(
                f"inference request for sequence {sequence_id} to model '{model}' must specify the START flag "
                "on the first request of the sequence (parameter 'sequence_start'): the server holds no such "
                "sequence (never started, ended, or released after max_sequence_idle_microseconds)"
            )
        if sequence is None:
            sequence = self._by_id[sequence_id] = Sequence(sequence_id, step.arrived_ns)
            self._place(sequence)
        sequence.queue.append(step)
        return sequence

    def _place(self, sequence: Sequence[T]) -> None:
        if self.direct and self._free_slots:
            sequence.slot = self._free_slots.pop()
        elif not self.direct and (not self.max_candidates or self._candidates < self.max_candidates):
            sequence.candidate = True
            self._candidates += 1
        else:
            self._backlog.append(sequence)

    def take(self, instance: int | None, limit: int) -> list[Taken[T]]:
        """The next batch: for direct, of ``instance``'s slots, each request at its slot's row; for oldest,
        the next requests of the sequences waiting longest, in rows 0, 1, ...; at most ``limit`` requests,
        all with the oldest one's shapes. The sequences taken are running until ``finish``."""
        ready = [s for s in self._by_id.values() if s.queue and not s.running and s.placed]
        if self.direct:
            assert instance is not None
            ready = [s for s in ready if s.slot is not None and s.slot // self.rows == instance]
        if not ready:
            return []
        ready.sort(key=lambda s: s.queue[0].arrived_ns)
        key = ready[0].queue[0].key
        taken: list[Taken[T]] = []
        for sequence in ready:
            if len(taken) == limit:
                break
            if sequence.queue[0].key != key:
                continue
            row = sequence.slot % self.rows if sequence.slot is not None else len(taken)
            sequence.running = True
            taken.append(Taken(row, sequence, sequence.queue.popleft()))
        return sorted(taken, key=lambda t: t.row)

    def ready(self) -> tuple[int, int | None]:
        """How many placed sequences have a request waiting and are not running, and when the oldest of
        those requests arrived (None: none waits): what the oldest strategy's delay is judged by."""
        heads = [s.queue[0].arrived_ns for s in self._by_id.values() if s.queue and not s.running and s.placed]
        return len(heads), min(heads, default=None)

    def finish(self, taken: list[Taken[T]], now_ns: int) -> list[Sequence[T]]:
        """A batch is over: its sequences may run again, and those it ended are released (unless a request
        starting the same id anew is queued behind the end). Returns the sequences released."""
        released = []
        for item in taken:
            sequence = item.sequence
            sequence.running = False
            sequence.idle_since_ns = now_ns
            if item.step.end and not sequence.queue:
                self.release(sequence)
                released.append(sequence)
        return released

    def release(self, sequence: Sequence[T]) -> None:
        """Forget a sequence; its slot (or place among the candidates) goes to the backlog's oldest."""
        if self._by_id.get(sequence.id) is not sequence:
            return
        del self._by_id[sequence.id]
        if sequence in self._backlog:
            self._backlog.remove(sequence)
            return
        if sequence.slot is not None:
            self._free_slots.append(sequence.slot)
            self._free_slots.sort(reverse=True)
        elif sequence.candidate:
            self._candidates -= 1
        sequence.slot, sequence.candidate = None, False
        while self._backlog and (self._free_slots if self.direct else not self._full()):
            self._place(self._backlog.popleft())

    def _full(self) -> bool:
        return bool(self.max_candidates) and self._candidates >= self.max_candidates

    def idle(self, now_ns: int) -> list[Sequence[T]]:
        """Release the sequences that have had nothing queued or running for ``idle_ns``; returns them."""
        expired = [s for s in self._by_id.values() if self._idle(s) and now_ns - s.idle_since_ns >= self.idle_ns]
        for sequence in expired:
            self.release(sequence)
        return expired

    def next_idle_ns(self) -> int | None:
        """When the next sequence would be released for idleness, if none sends anything before then."""
        return min((s.idle_since_ns + self.idle_ns for s in self._by_id.values() if self._idle(s)), default=None)

    @staticmethod
    def _idle(sequence: Sequence[T]) -> bool:
        return not sequence.queue and not sequence.running

    def pending(self) -> list[Step[T]]:
        """Every request still queued, in no particular order: what an unload fails."""
        return [step for sequence in self._by_id.values() for step in sequence.queue]

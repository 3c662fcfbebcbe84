"""Which sequences run at the next decoding step: plain logic over a waiting and a running queue.

Iteration-level (continuous) batching: at every step finished or cancelled sequences leave the running
batch and waiting ones join it, up to ``max_num_seqs``. A step prefills prompt tokens only within a token
budget (``max_num_batched_tokens``), and a prompt longer than what is left of it is prefilled in chunks
over the next steps (chunked prefill, as vLLM does): the running streams get a token at every step, each
step's prefill bounded, however long a prompt arrives. The waiting queue is bounded: beyond it a request is
refused at once. Nothing here touches a tensor, so the rules are tested without a model.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelserve.errors import Overloaded
from modelserve.generative.params import SamplingParams


class SequenceState(StrEnum):
    """Where a sequence stands; it only moves forward."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One generation: its prompt, what it generated, its cache while it runs, and its timings."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    state: SequenceState = SequenceState.WAITING
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length", or "abort" for a caller gone or a deadline passed
    cancelled: bool = False  # set by the caller's side; the engine frees the sequence at its next step
    cache: Any = None  # the engine's key/value cache of this sequence, dropped when it finishes
    prefilled: int = 0  # prompt tokens in the cache: a long prompt is prefilled over several steps
    generator: Any = None  # its random generator when the request gave a seed
    decoder: Any = None  # the engine's incremental detokenizer of this sequence
    text: str = ""  # the output decoded so far
    decoded: int = 0  # output tokens whose text is in ``text`` (the others end inside a character)
    text_sent: int = 0  # characters of ``text`` already handed to the caller
    arrived: float = field(default_factory=time.perf_counter)
    scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    gaps: list[float] = field(default_factory=list)  # seconds between two tokens, for the inter-token latency


@dataclass(frozen=True, slots=True)
class Step:
    """What one engine step does: prefill the next chunk of some prompts (a sequence and its token count,
    from its ``prefilled``), then decode one token for the running sequences whose prompts are in."""

    prefill: list[tuple[Sequence, int]]
    decode: list[Sequence]


def check_room(waiting: int, running: int, max_num_seqs: int, max_waiting: int) -> None:
    """Refuse one more sequence when the waiting queue is full (places free in the running batch are not
    waiting: they are taken at the next step). The engine process's caller asks it before sending."""
    if waiting >= max_waiting + max(0, max_num_seqs - running):
        raise Overloaded(
            f"{waiting} generations are waiting (at most {max_waiting}) and "
            f"{running} running (max_num_seqs {max_num_seqs}); retry later"
        )


class Scheduler:
    """The waiting queue (bounded) and the running batch (at most ``max_num_seqs``)."""

    def __init__(self, max_num_seqs: int, max_waiting: int, prefill_token_budget: int) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_waiting = max_waiting
        self.prefill_token_budget = prefill_token_budget
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, sequence: Sequence) -> None:
        """Queue a sequence, or refuse it when the waiting queue is full. Cancelled sequences hold no place:
        the next step drops them, and a caller who hung up must not turn the next one away."""
        waiting = sum(not s.cancelled for s in self.waiting)
        running = sum(not s.cancelled for s in self.running)
        check_room(waiting, running, self.max_num_seqs, self.max_waiting)
        self.waiting.append(sequence)

    def schedule(self) -> tuple[Step, list[Sequence]]:
        """The next step, and the sequences cancelled since the last one (removed, to be told so)."""
        dropped = [s for s in self.waiting if s.cancelled] + [s for s in self.running if s.cancelled]
        if dropped:
            self.waiting = deque(s for s in self.waiting if not s.cancelled)
            self.running = [s for s in self.running if not s.cancelled]
        decode = [s for s in self.running if s.prefilled >= len(s.prompt_ids)]
        prefill: list[tuple[Sequence, int]] = []
        budget = self.prefill_token_budget
        for sequence in self.running:  # prompts part-way in go on first, in the order they joined
            if budget and sequence.prefilled < len(sequence.prompt_ids):
                count = min(budget, len(sequence.prompt_ids) - sequence.prefilled)
                prefill.append((sequence, count))
                budget -= count
        while budget and self.waiting and len(self.running) < self.max_num_seqs:
            sequence = self.waiting.popleft()
            sequence.state, sequence.scheduled = SequenceState.RUNNING, time.perf_counter()
            self.running.append(sequence)
            count = min(budget, len(sequence.prompt_ids))
            prefill.append((sequence, count))
            budget -= count
        return Step(prefill, decode), dropped

    def finish(self, sequence: Sequence, reason: str) -> None:
        """Take a sequence out of the running batch and drop its cache."""
        sequence.state, sequence.finish_reason, sequence.cache = SequenceState.FINISHED, reason, None
        if sequence in self.running:
            self.running.remove(sequence)

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs."""
        return not self.waiting and not self.running


@dataclass(frozen=True, slots=True)
class Output:
    """New text of one sequence since the last output; ``finish_reason`` set on its last."""

    text: str
    new_tokens: int
    finish_reason: str | None = None


# What an engine tells of a sequence's new text, as it comes.
Listener = Callable[[Sequence, Output], None]

"""The scheduler's rules, without a model: who joins and leaves the running batch at each step."""

from __future__ import annotations

import pytest

from modelserve.errors import Overloaded
from modelserve.generative.params import SamplingParams
from modelserve.generative.scheduler import Scheduler, Sequence, SequenceState


def sequence(name: str, prompt: int = 4) -> Sequence:
    return Sequence(name, list(range(prompt)), SamplingParams(), max_tokens=8)


def test_sequences_join_at_the_next_step_up_to_max_num_seqs() -> None:
    scheduler = Scheduler(max_num_seqs=2, max_waiting=2, prefill_token_budget=100)
    a, b, c = sequence("a"), sequence("b"), sequence("c")
    for s in (a, b, c):
        scheduler.add(s)
    step, _ = scheduler.schedule()
    assert step.prefill == [(a, 4), (b, 4)]
    assert step.decode == []
    assert c.state is SequenceState.WAITING
    a.prefilled = b.prefilled = 4  # as the engine records each chunk it ran
    scheduler.finish(a, "stop")
    step, _ = scheduler.schedule()
    assert step.prefill == [(c, 4)]
    assert step.decode == [b]
    assert a.state is SequenceState.FINISHED
    assert a.cache is None


def test_a_long_prompt_goes_in_chunks_while_the_running_streams_decode_at_every_step() -> None:
    scheduler = Scheduler(max_num_seqs=8, max_waiting=8, prefill_token_budget=10)
    running, long, short = sequence("running", 4), sequence("long", 25), sequence("short", 4)
    scheduler.add(running)
    first, _ = scheduler.schedule()
    running.prefilled = 4
    scheduler.add(long)
    scheduler.add(short)
    chunks = []
    for _ in range(4):
        step, _ = scheduler.schedule()
        assert running in step.decode, "a running stream gets a token at every step"
        assert sum(count for _, count in step.prefill) <= 10, "each step's prefill stays within its budget"
        for prefilled, count in step.prefill:
            prefilled.prefilled += count
        chunks.append([(s.request_id, count) for s, count in step.prefill])
    assert chunks == [[("long", 10)], [("long", 10)], [("long", 5), ("short", 4)], []]
    assert first.prefill == [(running, 4)]


def test_cancelled_sequences_leave_at_the_next_step() -> None:
    scheduler = Scheduler(max_num_seqs=1, max_waiting=1, prefill_token_budget=100)
    running, waiting = sequence("r"), sequence("w")
    scheduler.add(running)
    scheduler.schedule()
    scheduler.add(waiting)
    running.cancelled = waiting.cancelled = True
    step, dropped = scheduler.schedule()
    assert dropped == [waiting, running]
    assert step.decode == []
    assert scheduler.idle


def test_the_waiting_queue_is_bounded() -> None:
    scheduler = Scheduler(max_num_seqs=1, max_waiting=1, prefill_token_budget=100)
    scheduler.add(sequence("a"))
    scheduler.add(sequence("b"))
    with pytest.raises(Overloaded, match="retry later"):
        scheduler.add(sequence("c"))


def test_cancelled_sequences_hold_no_place_in_the_queue() -> None:
    scheduler = Scheduler(max_num_seqs=1, max_waiting=1, prefill_token_budget=100)
    first, second = sequence("a"), sequence("b")
    scheduler.add(first)
    scheduler.add(second)
    first.cancelled = second.cancelled = True  # both callers hung up before the next step
    scheduler.add(sequence("c"))
    scheduler.add(sequence("d"))
    with pytest.raises(Overloaded, match="retry later"):
        scheduler.add(sequence("e"))

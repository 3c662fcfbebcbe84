"""The sequence batcher's plan as plain logic: slots, the backlog, the oldest strategy's order, ends and
idle sequences released, with times given as numbers."""

from __future__ import annotations

import pytest

from modelserve.batching.sequences import Sequences, Step, sequence_parameters
from modelserve.errors import InvalidInput


def step(at: int, *, start: bool = False, end: bool = False, key: object = ()) -> Step[None]:
    return Step(start, end, at, key, None)


def direct(rows: int = 2, instances: int = 1, idle_ns: int = 1000) -> Sequences[None]:
    return Sequences(direct=True, rows=rows, instances=instances, max_candidates=0, idle_ns=idle_ns)


def test_a_request_outside_any_sequence_must_start_one() -> None:
    sequences = direct()
    with pytest.raises(InvalidInput, match="sequence 7 to model 'm' must specify the START flag"):
        sequences.arrive("m", 7, step(0))
    sequences.arrive("m", 7, step(0, start=True, end=True))
    with pytest.raises(InvalidInput, match="START flag"):  # its last request ends it
        sequences.arrive("m", 7, step(1))


def test_direct_sequences_keep_their_slots_and_the_backlog_waits_for_one() -> None:
    sequences = direct(rows=2)
    for sequence_id, at in ((1, 0), (2, 1), (3, 2)):
        sequences.arrive("m", sequence_id, step(at, start=True))
    assert sequences.backlog == 1
    taken = sequences.take(0, 2)
    assert [(t.row, t.sequence.id) for t in taken] == [(0, 1), (1, 2)]
    assert sequences.take(0, 2) == []  # each sequence runs one request at a time
    sequences.finish(taken, 10)
    sequences.arrive("m", 2, step(11, end=True))
    ended = sequences.take(0, 2)
    assert [(t.row, t.sequence.id) for t in ended] == [(1, 2)]  # still in its own row
    assert [s.id for s in sequences.finish(ended, 12)] == [2]
    assert sequences.backlog == 0
    assert [(t.row, t.sequence.id) for t in sequences.take(0, 2)] == [(1, 3)]  # the freed slot


def test_slots_belong_to_instances() -> None:
    sequences = direct(rows=1, instances=2)
    sequences.arrive("m", "a", step(0, start=True))
    sequences.arrive("m", "b", step(1, start=True))
    assert [t.sequence.id for t in sequences.take(1, 1)] == ["b"]
    assert [t.sequence.id for t in sequences.take(0, 1)] == ["a"]


def test_oldest_takes_the_longest_waiting_with_the_same_shapes_up_to_the_limit() -> None:
    sequences: Sequences[None] = Sequences(direct=False, rows=2, instances=1, max_candidates=3, idle_ns=1000)
    sequences.arrive("m", 1, step(5, start=True, key="small"))
    sequences.arrive("m", 2, step(1, start=True, key="large"))
    sequences.arrive("m", 3, step(3, start=True, key="large"))
    sequences.arrive("m", 4, step(0, start=True, key="large"))  # beyond max_candidate_sequences
    assert sequences.backlog == 1
    assert sequences.ready() == (3, 1)
    taken = sequences.take(None, 2)
    assert [(t.row, t.sequence.id) for t in taken] == [(0, 2), (1, 3)]
    sequences.arrive("m", 2, step(6, end=True))
    assert [s.id for s in sequences.finish(taken, 7)] == []
    ended = sequences.take(None, 2)
    assert [t.sequence.id for t in ended] == [1]  # the oldest waiting now: a batch of its shapes alone
    sequences.finish(ended, 8)
    assert [t.sequence.id for t in sequences.take(None, 2)] == [2]
    assert sequences.backlog == 1


def test_an_idle_sequence_is_released_and_its_slot_freed() -> None:
    sequences = direct(rows=1, idle_ns=100)
    sequences.arrive("m", 1, step(0, start=True))
    sequences.arrive("m", 2, step(5, start=True))
    sequences.finish(sequences.take(0, 1), 10)
    assert sequences.next_idle_ns() == 110
    assert sequences.idle(109) == []
    assert [s.id for s in sequences.idle(110)] == [1]
    assert sequences.get(1) is None
    assert [t.sequence.id for t in sequences.take(0, 1)] == [2]
    with pytest.raises(InvalidInput, match=r"sequence 1 .* START flag"):
        sequences.arrive("m", 1, step(120))


def test_a_restart_queues_behind_the_sequences_end() -> None:
    sequences = direct(rows=1)
    sequences.arrive("m", 1, step(0, start=True, end=True))
    sequences.arrive("m", 1, step(1, start=True))
    first = sequences.take(0, 1)
    assert sequences.finish(first, 2) == []  # the new start keeps the sequence
    assert [t.step.start for t in sequences.take(0, 1)] == [True]


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"sequence_id": 5, "sequence_start": True}, (5, True, False)),
        ({"sequence_id": "uuid", "sequence_end": True}, ("uuid", False, True)),
    ],
)
def test_sequence_parameters(parameters: dict[str, object], expected: tuple[object, bool, bool]) -> None:
    assert sequence_parameters(parameters, "m") == expected


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({}, "non-zero or non-empty correlation ID"),
        ({"sequence_id": ""}, "non-zero or non-empty correlation ID"),
        ({"sequence_id": 1.5}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": -1}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": 1, "sequence_start": 1}, "'sequence_start' is 1"),
    ],
)
def test_sequence_parameters_refused(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sequence_parameters(parameters, "m")

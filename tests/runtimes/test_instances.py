"""The instance pool a backend lends its per-instance state from (TensorRT's execution contexts), with real
threads: every instance is made up front, and no two calls ever hold the same one at once."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelserve.runtimes.instances import InstancePool

WAIT_S = 10.0


class Context:
    """A stand-in for an execution context: something with an identity, made by a counted factory."""

    def __init__(self, number: int) -> None:
        self.number = number


def _factory() -> tuple[list[Context], Callable[[], Context]]:
    made: list[Context] = []
    numbers = itertools.count()

    def make() -> Context:
        made.append(Context(next(numbers)))
        return made[-1]

    return made, make


@pytest.mark.parametrize("instance_count", [1, 3, 8])
def test_one_instance_is_made_per_instance_count(instance_count: int) -> None:
    made, make = _factory()
    pool = InstancePool(make, instance_count)
    assert len(made) == instance_count
    assert pool.size == instance_count


def test_a_pool_without_instances_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one instance"):
        InstancePool(object, 0)


def test_calls_running_together_each_hold_their_own_instance() -> None:
    """As many calls as instances, all inside at the same moment (a barrier holds them there)."""
    made, make = _factory()
    pool: InstancePool[Context] = InstancePool(make, 4)
    together = threading.Barrier(4, timeout=WAIT_S)

    def call() -> int:
        with pool.lend() as context:
            together.wait()  # every call holds its instance now
            return context.number

    with ThreadPoolExecutor(4) as threads:
        held = list(threads.map(lambda _: call(), range(4)))
    assert sorted(held) == [0, 1, 2, 3]
    assert len(made) == 4  # lending makes nothing new


def test_more_callers_than_instances_wait_instead_of_sharing() -> None:
    """Eight threads, two instances, 400 calls: each pair of holders meets at a barrier, so both instances
    are held at once every time, and a third caller handed a lent instance would be seen."""
    made, make = _factory()
    pool: InstancePool[Context] = InstancePool(make, 2)
    pair = threading.Barrier(2, timeout=WAIT_S)
    lock = threading.Lock()
    holding: set[int] = set()
    shared: list[int] = []

    def call() -> None:
        with pool.lend() as context:
            with lock:
                if context.number in holding:
                    shared.append(context.number)
                holding.add(context.number)
            pair.wait()
            with lock:
                holding.discard(context.number)

    with ThreadPoolExecutor(8) as threads:
        for future in [threads.submit(call) for _ in range(400)]:
            future.result(WAIT_S)
    assert shared == []
    assert len(made) == 2


def test_a_caller_waits_for_an_instance_to_come_back() -> None:
    made, make = _factory()
    pool: InstancePool[Context] = InstancePool(make, 1)
    got = threading.Event()

    def second() -> int:
        with pool.lend() as context:
            got.set()
            return context.number

    with ThreadPoolExecutor(1) as threads, pool.lend() as first:
        waiting = threads.submit(second)
        assert not got.wait(0.05)  # the only instance is lent: the second caller is still waiting
        release = first.number
    assert waiting.result(WAIT_S) == release
    assert len(made) == 1

"""Per-instance state for a backend whose calls must not share it, such as TensorRT's execution contexts.

The batcher runs up to ``instance_count`` batches of one model version at once, each on its own
inference thread. A backend whose state serves one call at a time (an execution context keeps the
shapes and buffer addresses of the call that set them) makes one per instance and lends each to one
call at a time. Kept apart from any backend, so that the lending can be tested without one.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class InstancePool(Generic[T]):
    """``count`` objects made by ``make``, each lent to one caller at a time.

    A caller that finds every object lent waits for one to come back rather than sharing one: the
    batcher never runs more calls than there are instances, but a warmup or a caller outside it may.
    """

    def __init__(self, make: Callable[[], T], count: int) -> None:
        if count < 1:
            raise ValueError(f"an instance pool needs at least one instance, not {count}")
        self.size = count
        self._free: queue.SimpleQueue[T] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(make())

    @contextmanager
    def lend(self) -> Iterator[T]:
        """One instance, for the caller alone until the block ends."""
        instance = self._free.get()
        try:
            yield instance
        finally:
            self._free.put(instance)

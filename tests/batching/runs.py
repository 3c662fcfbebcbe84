"""The run functions and requests the batcher tests drive it with."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from modelserve.batching.batcher import Batcher

Arrays = dict[str, np.ndarray[Any, Any]]
Transform = Callable[[Arrays], Arrays]
Factory = Callable[..., Batcher]


def double(inputs: Arrays) -> Arrays:
    """The model every test runs unless it needs another: ``y = 2 x``, row by row."""
    return {"y": inputs["x"] * 2}


class GatedRun:
    """A run function that records every call and blocks it until ``gate`` is set.

    A call whose input holds a negative number raises ``error``: that is how a test puts a failing
    request into a batch without knowing in advance which batch it lands in.
    """

    def __init__(self, *, open_: bool = False, transform: Transform = double, error: Exception | None = None) -> None:
        self.calls: list[Arrays] = []
        self.returned: list[Arrays] = []
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self._entered = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._transform = transform
        self._error = error

    def __call__(self, inputs: Arrays) -> Arrays:
        with self._lock:
            self.calls.append(inputs)
        self._entered.release()
        if not self.gate.wait(30):
            raise RuntimeError("the test never opened the gate")
        if self._error is not None and any((array < 0).any() for array in inputs.values()):
            raise self._error
        outputs = self._transform(inputs)
        with self._lock:
            self.returned.append(outputs)
        return outputs

    @property
    def sizes(self) -> list[int]:
        """The first dimension of ``x`` in every call, in call order."""
        return [len(call["x"]) for call in self.calls]

    async def started(self, count: int = 1) -> None:
        """Wait until ``count`` more calls have entered the function (they may still be held)."""
        for _ in range(count):
            entered = await asyncio.to_thread(self._entered.acquire, True, 10)
            assert entered, "the run function was not called"


def rows(count: int, marker: int, *, dtype: Any = np.float32, features: int = 4) -> Arrays:
    """A request of ``count`` samples whose values are unique to ``marker``, so a slice tells whose it is."""
    values = np.arange(count * features).reshape(count, features) + 1000 * marker
    return {"x": values.astype(dtype)}


def assert_doubled(result: Arrays, request: Arrays) -> None:
    """``result`` is exactly this request's answer: same rows, same dtype, doubled."""
    assert set(result) == {"y"}
    assert result["y"].dtype == request["x"].dtype
    np.testing.assert_array_equal(result["y"], request["x"] * 2)

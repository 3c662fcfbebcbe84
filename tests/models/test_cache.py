"""The response cache: what makes two requests the same, the byte budget, and what it never serves."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.models.cache import ResponseCache


class Computer:
    """Stands for a loaded version's batcher: what an answer remembers having computed it."""


def ints(*values: int) -> np.ndarray:
    return np.array([values], dtype=np.int32)


def key(
    inputs: dict[str, np.ndarray], *, model: str = "m", version: int = 1, outputs: tuple[str, ...] = ("y",)
) -> bytes:
    return ResponseCache.key(model, version, inputs, outputs)


def test_a_request_is_known_by_its_model_version_inputs_and_outputs() -> None:
    base = key({"x": ints(1, 2)})

    assert key({"x": ints(1, 2)}) == base
    assert key({"x": np.array([[1, 2]], dtype=np.int32)}) == base  # a different array of the same bytes
    others = [
        key({"x": ints(1, 2)}, model="n"),
        key({"x": ints(1, 2)}, version=2),
        key({"x": ints(1, 2)}, outputs=("z",)),
        key({"x": ints(1, 3)}),
        key({"x": ints(1, 2).astype(np.int64)}),
        key({"x": ints(1, 2).reshape(2, 1)}),
        key({"w": ints(1, 2)}),
        key({"x": ints(1, 2), "w": ints(0)}),
    ]
    assert base not in others
    assert len(set(others)) == len(others)


def test_bytes_inputs_are_known_by_each_elements_bytes() -> None:
    def strings(*items: bytes) -> dict[str, np.ndarray]:
        return {"s": np.array(items, dtype=object)}

    assert key(strings(b"ab", b"c")) == key(strings(b"ab", b"c"))
    assert key(strings(b"ab", b"c")) != key(strings(b"a", b"bc"))  # the same bytes, cut elsewhere


def test_an_answer_is_a_read_only_copy_served_only_to_the_version_that_computed_it() -> None:
    cache, computer = ResponseCache(1 << 20), Computer()
    answer = {"y": ints(4, 5)}
    cache.put(b"k", "m", computer, answer)
    answer["y"][0, 0] = 99  # the batch's array, written over by nobody but the test

    held = cache.get(b"k", computer)
    assert held is not None
    np.testing.assert_array_equal(held["y"], ints(4, 5))
    with pytest.raises(ValueError, match="read-only"):
        held["y"][0, 0] = 1
    assert cache.get(b"k", Computer()) is None  # a reload of the model: its answers may differ
    assert cache.get(b"other", computer) is None


def test_the_least_recently_used_answers_leave_to_keep_within_the_budget() -> None:
    evicted: list[str] = []
    sizes: list[int] = []
    computer = Computer()
    cache = ResponseCache(3 * 400, evicted=evicted.append, resized=sizes.append)  # three answers of 400 bytes
    for name in ("a", "b", "c"):
        cache.put(name.encode(), name, computer, {"y": np.zeros(100, np.float32)})
    assert cache.get(b"a", computer) is not None  # a is now the most recently used

    cache.put(b"d", "d", computer, {"y": np.zeros(100, np.float32)})

    assert evicted == ["b"]
    assert cache.get(b"b", computer) is None
    assert all(cache.get(k, computer) is not None for k in (b"a", b"c", b"d"))
    assert cache.bytes == 1200 == sizes[-1]
    cache.put(b"huge", "e", computer, {"y": np.zeros(1000, np.float32)})  # larger than the whole budget
    assert cache.get(b"huge", computer) is None
    assert len(cache) == 3
    assert evicted == ["b"]


def test_a_stale_answer_is_replaced_by_the_new_versions() -> None:
    cache, old, new = ResponseCache(1 << 20), Computer(), Computer()
    cache.put(b"k", "m", old, {"y": ints(1)})
    cache.put(b"k", "m", new, {"y": ints(2)})

    held = cache.get(b"k", new)
    assert held is not None
    np.testing.assert_array_equal(held["y"], ints(2))
    assert len(cache) == 1
    assert cache.bytes == 4

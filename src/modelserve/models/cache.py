"""The response cache, as Triton's: the answers of models whose config.yaml enables it
(``response_cache: {enable: true}``), kept within one server-wide byte budget (``RESPONSE_CACHE_MB``),
least recently used out first.

A request is known by a hash of what decides its answer: the model, its version, each input's name,
datatype, shape and bytes, and the outputs asked for (SHA-256, the fastest hash hashlib has on CPUs
with SHA instructions: 0.7 ms per MiB here, against 1.3 for BLAKE2b; its first 128 bits, whose
collision is less likely than a flipped bit in memory). A hit is answered before the batcher, so it
never queues; a miss runs as any request does and its answer is stored once computed. Answers are
stored as copies, marked read-only, so that what the budget counts is what the cache holds (a
request's outputs are views of its batch's arrays, which a view would keep alive whole) and no reader
can change another's answer. Each answer
remembers, weakly, the loaded version that computed it (its batcher): after an unload or a reload,
whose files may differ, it is never served again, and leaves by the LRU order like any other.

Everything runs on the event loop: no lock.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray[Any, Any]]


class ResponseCache:
    """Answers by request key, at most ``budget_bytes`` of them, least recently used evicted first.

    ``evicted`` hears the model of every answer evicted; ``resized`` the bytes held after each change.
    """

    def __init__(
        self,
        budget_bytes: int,
        evicted: Callable[[str], None] | None = None,
        resized: Callable[[int], None] | None = None,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[str, weakref.ref[object], Arrays, int]] = OrderedDict()
        self._evicted = evicted
        self._resized = resized

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(model: str, version: int, inputs: Arrays, outputs: Iterable[str]) -> bytes:
        """The request's key: a hash of the model, its version, its inputs and the outputs asked for."""
        digest = hashlib.sha256()
        digest.update(f"{model}\0{version}\0".encode())
        for name in sorted(inputs):
            array = inputs[name]
            digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            if array.dtype.kind == "O":  # BYTES: each element's length, then its bytes
                for item in array.flat:
                    data = item if isinstance(item, bytes) else str(item).encode()
                    digest.update(len(data).to_bytes(8, "little"))
                    digest.update(data)
            else:
                digest.update(np.ascontiguousarray(array).data)
        digest.update("\0".join(outputs).encode())
        return digest.digest()[:16]

    def get(self, key: bytes, computer: object) -> Arrays | None:
        """The answer stored under ``key`` by ``computer`` (the loaded version's batcher), now the most
        recently used, or None."""
        entry = self._entries.get(key)
        if entry is None or entry[1]() is not computer:
            return None
        self._entries.move_to_end(key)
        return entry[2]

    def put(self, key: bytes, model: str, computer: object, outputs: Arrays) -> None:
        """Store a copy of ``outputs``, computed by ``computer`` for ``model``, evicting the least recently
        used answers to fit; an answer larger than the whole budget is not stored."""
        kept = {name: _frozen_copy(array) for name, array in outputs.items()}
        size = sum(_size(array) for array in kept.values())
        if size > self.budget_bytes:
            return
        if (replaced := self._entries.pop(key, None)) is not None:  # a stale answer of an earlier load
            self.bytes -= replaced[3]
        while self.bytes + size > self.budget_bytes:
            _, (owner, _, _, freed) = self._entries.popitem(last=False)
            self.bytes -= freed
            if self._evicted is not None:
                self._evicted(owner)
        self._entries[key] = (model, weakref.ref(computer), kept, size)
        self.bytes += size
        if self._resized is not None:
            self._resized(self.bytes)


def _frozen_copy(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    copy = np.array(array, copy=True)
    copy.flags.writeable = False
    return copy


def _size(array: np.ndarray[Any, Any]) -> int:
    """Bytes an array holds: for BYTES, its elements' too, not only the pointers to them."""
    if array.dtype.kind != "O":
        return array.nbytes
    return array.nbytes + sum(len(item) if isinstance(item, bytes | str) else 64 for item in array.flat)

"""Triton's system shared-memory extension: clients register POSIX shared-memory regions, then send
inputs and receive outputs through them instead of the request body, for both HTTP and gRPC.

A region is mapped from ``/dev/shm`` by its key; inputs are read as numpy views of the mapping (no
copy) and outputs are written into it. Every offset and size is checked against the registered
region, so a bad request is a 400 / INVALID_ARGUMENT, never a crash or a write out of bounds.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np

from modelserve.errors import InvalidInput
from modelserve.protocol.cuda_shared_memory import CudaSharedMemory
from modelserve.protocol.raw import from_raw, to_raw

SHM_ROOT = "/dev/shm"
_KEY = re.compile(r"^/?[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # one name under /dev/shm: never a path


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a tensor lives: a registered region, and a byte range inside it."""

    region: str
    byte_size: int
    offset: int = 0

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any], tensor: str) -> Placement | None:
        """The placement a tensor's ``shared_memory_*`` parameters describe, if any."""
        if "shared_memory_region" not in parameters:
            return None
        region, size = parameters["shared_memory_region"], parameters.get("shared_memory_byte_size")
        offset = parameters.get("shared_memory_offset", 0)
        if not isinstance(region, str) or not _whole(size) or not _whole(offset):
            raise InvalidInput(
                f"tensor '{tensor}': shared_memory_region needs a name, shared_memory_byte_size and "
                "shared_memory_offset non-negative integers"
            )
        return cls(region, size, offset)


@dataclass(frozen=True, slots=True)
class Region:
    """A registered region: ``byte_size`` bytes from ``offset`` of the shared-memory object ``key``."""

    name: str
    key: str
    offset: int
    byte_size: int
    buffer: mmap.mmap

    def status(self) -> dict[str, Any]:
        """The region as the status endpoints report it."""
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


class SharedMemoryRegistry:
    """The regions registered with this server, by name."""

    def __init__(self) -> None:
        self._regions: dict[str, Region] = {}

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes of the shared-memory object ``key`` from ``offset``, as ``name``."""
        if not name:
            raise InvalidInput("a shared-memory region needs a name")
        if name in self._regions:
            raise InvalidInput(f"shared-memory region '{name}' is already registered; unregister it first")
        if not isinstance(key, str) or not _KEY.match(key) or key.strip("/") in (".", ".."):
            raise InvalidInput(f"shared-memory key {key!r} is not the name of a POSIX shared-memory object")
        if not _whole(offset) or not _whole(byte_size) or byte_size == 0:
            raise InvalidInput("offset must be a non-negative integer and byte_size a positive one")
        path = os.path.join(SHM_ROOT, key.lstrip("/"))
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise InvalidInput(f"cannot open shared-memory object {key!r}: {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise InvalidInput(
                    f"region '{name}' ({byte_size} bytes from offset {offset}) runs past the end of "
                    f"shared-memory object {key!r} ({size} bytes)"
                )
            buffer = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping keeps its own reference
        self._regions[name] = Region(name, key, offset, byte_size, buffer)

    def unregister(self, name: str | None = None) -> None:
        """Forget one region, or all of them; unknown names are already gone, which is fine."""
        # Mappings are not closed here: a request may still hold a view of them. They are unmapped
        # when the last view goes.
        if name:
            self._regions.pop(name, None)
        else:
            self._regions.clear()

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every region, or the one named."""
        if name:
            return [self._region(name).status()]
        return [region.status() for region in self._regions.values()]

    def check(self, placement: Placement, tensor: str) -> Region:
        """The region a placement names, once the byte range is known to lie inside it."""
        region = self._region(placement.region)
        if placement.offset + placement.byte_size > region.byte_size:
            raise InvalidInput(
                f"tensor '{tensor}': {placement.byte_size} bytes from offset {placement.offset} run past the end "
                f"of shared-memory region '{region.name}' ({region.byte_size} bytes)"
            )
        return region

    def read(self, placement: Placement, datatype: str, shape: list[int], tensor: str) -> np.ndarray[Any, Any]:
        """An input tensor, as a view of the region."""
        region = self.check(placement, tensor)
        start = region.offset + placement.offset
        view = memoryview(region.buffer)[start : start + placement.byte_size]
        return from_raw(view, datatype, shape, tensor, "shared_memory_byte_size")

    def write(self, placement: Placement, array: np.ndarray[Any, Any], tensor: str) -> int:
        """Copy an output tensor into the region; the number of bytes written."""
        region = self.check(placement, tensor)
        raw = to_raw(array)
        if len(raw) > placement.byte_size:
            raise InvalidInput(
                f"output '{tensor}' needs {len(raw)} bytes, but its shared_memory_byte_size is {placement.byte_size}"
            )
        start = region.offset + placement.offset
        region.buffer[start : start + len(raw)] = raw
        return len(raw)

    def place(self, placement: Placement, array: np.ndarray[Any, Any], tensor: str) -> dict[str, Any]:
        """Write an output into its region; the parameters that tell the caller where it went."""
        written = self.write(placement, array, tensor)
        parameters: dict[str, Any] = {"shared_memory_region": placement.region, "shared_memory_byte_size": written}
        if placement.offset:
            parameters["shared_memory_offset"] = placement.offset
        return parameters

    def _region(self, name: str) -> Region:
        try:
            return self._regions[name]
        except KeyError:
            raise InvalidInput(f"shared-memory region '{name}' is not registered") from None


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(eq=False)
class SharedMemory:
    """Triton's two shared-memory extensions as one server answers them, over HTTP and gRPC alike:
    built once by the composition root and handed to both protocols."""

    system: SharedMemoryRegistry = field(default_factory=lambda: SharedMemoryRegistry())
    cuda: CudaSharedMemory = field(default_factory=CudaSharedMemory.probe)

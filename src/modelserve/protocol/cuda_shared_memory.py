"""Triton's CUDA shared-memory extension, answered as Triton built without GPU support answers it.

This server reads and writes tensors in system shared memory only. Refusing the whole extension would
still break Triton's clients: its shm examples unregister every CUDA region before they start, and
tools list the CUDA regions beside the system ones. So nothing is ever registered, and every answer
follows from that: the status lists no region, unregistering has nothing to do and succeeds, the
status of a named region is the refusal the system registry gives a name it does not hold, and only
a registration is refused, saying why and what to use instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from modelserve.errors import InvalidInput
from modelserve.observability.gpu import device_memory

_INSTEAD = "register the region as system shared memory (/v2/systemsharedmemory) instead"


class CudaSharedMemory:
    """The CUDA shared-memory regions registered with this server: always none."""

    def __init__(self, gpu: bool) -> None:
        self._why = (
            "CUDA shared memory is not supported by this server"
            if gpu
            else "CUDA shared memory needs a GPU, and this server sees none"
        )

    @classmethod
    def probe(cls) -> CudaSharedMemory:
        """Asks NVML once whether there is a GPU, so a refusal says which of the two reasons holds;
        call it at startup, never on a request (NVML initialisation can take a while)."""
        return cls(device_memory() is not None)

    def register(self, name: str) -> NoReturn:
        """Refuse the region: 400 / INVALID_ARGUMENT, as Triton without GPU support answers."""
        raise InvalidInput(f"cannot register CUDA shared-memory region '{name}': {self._why}; {_INSTEAD}")

    def unregister(self, name: str | None = None) -> None:
        """Nothing is registered, so a named region and all of them are already gone, which is fine."""

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """No region; a named one is not registered, and is refused as the system registry refuses it."""
        if name:
            raise InvalidInput(f"CUDA shared-memory region '{name}' is not registered")
        return []

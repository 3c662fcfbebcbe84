"""The memory budget models share: what each one holds, what a load will need, and who makes room.

A budget watches one kind of memory through a meter: the process's RSS for MODEL_MEMORY_BUDGET_MB,
GPU 0's memory in use for GPU_MEMORY_FRACTION. A model's footprint is what the meter rose by while it
loaded and ran once (its configured warmup, else one batch of zeros: a runtime allocates its working
memory on its first run, ONNX Runtime's arena for one), taken while no other load ran (loads queue
behind one gate whenever a budget is set, so a reading is never another model's); the runtime's own
estimate is the floor, since an allocator can
reuse memory a load therefore does not show. It is refined at unload by what the meter fell by, which
includes what inference grew (ONNX Runtime's arenas, say) and leaves out what a runtime's first load in
the process set up for good: that is what the next load of the version reserves. A version never
measured reserves twice its files' size: a runtime holds the weights plus the optimised copies it
builds from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelserve.errors import InsufficientMemory
from modelserve.models.memory import MIB

UNMEASURED_FACTOR = 2


@dataclass(frozen=True)
class Holder:
    """A loaded model as eviction sees it: what it holds, and whether it may go."""

    name: str
    held: dict[str, int]
    last_used_ns: int
    pinned: bool
    busy: bool

    @property
    def evictable(self) -> bool:
        """Idle and not pinned: unloading it loses no request and breaks no promise."""
        return not (self.pinned or self.busy)


Order = Callable[[list[Holder]], list[Holder]]


def least_recently_used(holders: list[Holder]) -> list[Holder]:
    """The default eviction order: the model whose last request is oldest first."""
    return sorted(holders, key=lambda h: h.last_used_ns)


class MemoryBudget:
    """A limit on one kind of memory (``kind`` as the V2 statistics name it: CPU, GPU) and a meter for it."""

    def __init__(self, kind: str, limit_bytes: int, setting: str, meter: Callable[[], int]) -> None:
        self.kind, self.limit_bytes, self.setting = kind, limit_bytes, setting
        self.meter = meter
        self._learned: dict[str, dict[int, int]] = {}  # model -> version -> bytes

    def estimate(self, name: str, version: int, files: Path) -> int:
        """What loading this version will take: the last measurement of it, else twice its files."""
        learned = self._learned.get(name, {}).get(version)
        return learned if learned is not None else UNMEASURED_FACTOR * _size_on_disk(files)

    def learn(self, name: str, version: int, held: int) -> None:
        """What the version was last seen to hold, for its next load to reserve. The latest reading wins:
        keeping the largest ever would let one noisy reading refuse the model for good."""
        self._learned.setdefault(name, {})[version] = held

    def learned(self, name: str) -> int | None:
        """What loading ``name`` reserves, all versions measured so far together; None before any was."""
        sizes = self._learned.get(name)
        return sum(sizes.values()) if sizes else None

    def room_for(
        self, name: str, need: int, holders: Sequence[Holder], *, may_evict: bool, order: Order | None = None
    ) -> list[Holder]:
        """The models to evict, least recently used first (or in ``order``), so that ``need`` more bytes fit.

        Raises InsufficientMemory when even evicting every idle unpinned model (or, when models may not
        be evicted, none) leaves too little, so that nothing is unloaded for a load that would fail anyway.
        """
        if need > self.limit_bytes:
            raise InsufficientMemory(
                f"cannot load model '{name}': it needs about {_mib(need)} MiB of {self.kind} memory, more than "
                f"{self.setting} allows ({_mib(self.limit_bytes)} MiB); raise the budget"
            )
        free = self.limit_bytes - sum(h.held.get(self.kind, 0) for h in holders)
        chosen: list[Holder] = []
        candidates = [h for h in holders if h.evictable] if may_evict else []
        for holder in (order or least_recently_used)(candidates):
            if need <= free:
                break
            chosen.append(holder)
            free += holder.held.get(self.kind, 0)
        if need > free:
            raise InsufficientMemory(self._no_room(name, need, holders, may_evict))
        return chosen

    def over_by(self, holders: Sequence[Holder]) -> int:
        """Bytes the loaded models hold beyond the budget (a load measured larger than it reserved)."""
        return sum(h.held.get(self.kind, 0) for h in holders) - self.limit_bytes

    def _no_room(self, name: str, need: int, holders: Sequence[Holder], may_evict: bool) -> str:
        def listing(which: list[Holder]) -> str:
            return ", ".join(f"{h.name} ({_mib(h.held.get(self.kind, 0))} MiB)" for h in which) or "none"

        held = sum(h.held.get(self.kind, 0) for h in holders)
        idle = [h for h in holders if h.evictable]
        pinned = [h for h in holders if h.pinned]
        busy = [h for h in holders if h.busy and not h.pinned]
        start = (
            f"cannot load model '{name}': it needs about {_mib(need)} MiB of {self.kind} memory and loaded models "
            f"hold {_mib(held)} of the {_mib(self.limit_bytes)} MiB {self.setting} allows"
        )
        if not may_evict:
            return f"{start}: {listing(list(holders))}. Unload one of them or raise {self.setting}"
        return (
            f"{start}, and not enough of it is idle to evict; pinned: {listing(pinned)}; serving requests: "
            f"{listing(busy)}; idle: {listing(idle)}. Retry later, unload a model or raise {self.setting}"
        )


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _mib(size: int) -> str:
    return f"{size / MIB:.0f}"

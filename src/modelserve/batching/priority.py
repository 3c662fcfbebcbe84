"""Priority levels and queue policies, as Triton's dynamic batcher has them.

A model with ``priority_levels: N`` takes requests at levels 1 (the highest) to N; a request names its
level with the ``priority`` parameter (0 or none: ``default_priority_level``). The queue is kept in
the order batches are taken from: by level, then by arrival, so the batcher forms each batch from the
highest level waiting, and from that level only: a high-priority request is never held up by the
low-priority requests a full batch would carry (ResNet-18 computes a batch of 16 some 10x longer
than a batch of one). Each level has a queue policy (``priority_queue_policy``, else
``default_queue_policy``): ``max_queue_size`` bounds that level alone (a full level gets 429 while the
others queue on), and a request still queued after ``default_timeout_microseconds`` (or its own
``timeout`` parameter, when ``allow_timeout_override`` lets a request shorten it) is either refused
(``REJECT``, a 504 like any deadline) or ``DELAY``ed: moved behind every request that has not timed
out, whatever their levels, to run when nothing else waits.

Order alone leaves a top-level request waiting for the lower levels' batches already running (a
batch of 32 takes several times one of 1) and for their share of the CPU. So where the batches run
on the shared inference threads, the levels below the top run on background threads instead, which
the kernel runs only after every other thread of the server (``cpus.background_threads``), and they
hold the model's ``instance_count`` instances, while the top level also has a lane of its own: a
top-level request that finds its lane free starts as it is queued, without waiting for the
dispatcher's turn on an event loop the crowd keeps busy, on a core the lower levels yield. Measured in
docs/PERFORMANCE.md#priorities.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Triton's ModelQueuePolicy for one level."""

    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    default_timeout_us: int = 0  # 0: requests of the level never time out in the queue
    allow_timeout_override: bool = False  # a request's own timeout may shorten (never lengthen) the default
    max_queue_size: int = 0  # 0: the level is bounded by nothing but the model's max_queue_size

    def timeout_us(self, requested_us: int | None) -> int:
        """The queue timeout of a request that asked for ``requested_us`` (None: asked for none)."""
        if self.allow_timeout_override and requested_us:
            return min(requested_us, self.default_timeout_us) if self.default_timeout_us else requested_us
        return self.default_timeout_us


class Queued(Protocol):
    """What the ordering reads of a queued request."""

    level: int
    delay_at_ns: int


Q = TypeVar("Q", bound=Queued)


def insert(queue: deque[Q], pending: Q) -> None:
    """Queue ``pending`` behind every request of its level or a higher one, ahead of the lower levels."""
    index = len(queue)
    while index and queue[index - 1].level > pending.level:
        index -= 1
    queue.insert(index, pending)


def demote(queue: deque[Q], now_ns: int, delayed_level: int) -> int:
    """Move each request whose DELAY timeout has passed behind all the others, at ``delayed_level``
    (below every level), in the order they timed out; returns how many moved."""
    late = [p for p in queue if p.delay_at_ns and p.delay_at_ns <= now_ns and p.level < delayed_level]
    if not late:
        return 0
    late.sort(key=lambda p: p.delay_at_ns)
    moved = {id(p) for p in late}
    kept = [p for p in queue if id(p) not in moved]
    queue.clear()
    queue.extend(kept)
    for pending in late:
        pending.level = delayed_level
        queue.append(pending)
    return len(late)

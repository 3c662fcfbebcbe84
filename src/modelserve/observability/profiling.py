"""CPU profiles of the live server: every thread's Python stack, sampled N times a second for a while.

Sampling happens inside the process (``sys._current_frames``) on a thread of its own that exists only
while a profile is recorded, so a server that is not being profiled pays nothing, and it needs no
ptrace permission, which containers rarely grant (py-spy needs it). The event loop's coroutines
show up under the main thread, the models' compute under the ``inference`` threads.

A thread blocked waiting (an idle executor thread, the event loop in epoll, a condition wait) is
left out unless asked for: on a quiet server such samples outnumber the work ten to one and flatten
the flame graph; the profile says how many it left out.

A profile renders as speedscope JSON (https://www.speedscope.app), folded stacks (Brendan Gregg's
format, the input of flamegraph.pl) or a self-contained SVG flame graph for a browser.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePath
from types import FrameType
from typing import Any

import orjson

MAX_SECONDS = 60.0
MAX_HZ = 1000

Stack = tuple[str, ...]  # thread name first, then callers before callees

# Functions that, when they are the innermost Python frame, mean the thread waits in C code: an idle
# executor thread, the event loop in epoll (asyncio's ``EpollSelector.select``; uvloop's loop is C,
# under asyncio's Runner.run), a lock.
WAITING = (
    "_worker (futures/thread.py",
    "Runner.run (asyncio/runners.py",
    "Condition.wait (",
    "Event.wait (",
    "Thread.join (",
    "_wait_for_tstate_lock (",
    "Queue.get (",
    "SimpleQueue.get (",
    "Selector.select (",
)


class ProfileFormat(StrEnum):
    """What a recorded profile renders as."""

    speedscope = "speedscope"
    folded = "folded"
    svg = "svg"

    @property
    def extension(self) -> str:
        """How a file of this format is named."""
        return {"speedscope": "speedscope.json", "folded": "folded.txt", "svg": "svg"}[self.value]


@dataclass
class Profile:
    """How often each stack was seen, and how the recording went."""

    seconds: float
    hz: int
    samples: Counter[Stack] = field(default_factory=Counter)
    idle: int = 0  # samples of waiting threads left out

    def render(self, fmt: ProfileFormat) -> tuple[bytes, str]:
        """The profile as ``fmt``, with its media type."""
        if fmt is ProfileFormat.speedscope:
            return self.speedscope(), "application/json"
        if fmt is ProfileFormat.folded:
            return self.folded().encode(), "text/plain; charset=utf-8"
        return self.svg().encode(), "image/svg+xml"

    def folded(self) -> str:
        """One line per distinct stack: frames joined by ``;``, a space, the number of samples."""
        return "".join(f"{';'.join(stack)} {count}\n" for stack, count in sorted(self.samples.items()))

    def speedscope(self) -> bytes:
        """speedscope's file format: one sampled profile per thread, frames shared."""
        frames: dict[str, int] = {}
        threads: dict[str, tuple[list[list[int]], list[float]]] = {}
        interval = 1 / self.hz
        for stack, count in sorted(self.samples.items()):
            indices = [frames.setdefault(name, len(frames)) for name in stack[1:]]
            samples, weights = threads.setdefault(stack[0], ([], []))
            samples.append(indices)
            weights.append(count * interval)
        document = {
            "$schema": "https://www.speedscope.app/file-format-schema.json",
            "name": f"modelserve CPU profile, {self.seconds:g} s at {self.hz} Hz",
            "exporter": "modelserve",
            "activeProfileIndex": 0,
            "shared": {"frames": [_frame(name) for name in frames]},
            "profiles": [
                {
                    "type": "sampled",
                    "name": thread,
                    "unit": "seconds",
                    "startValue": 0,
                    "endValue": sum(weights),
                    "samples": samples,
                    "weights": weights,
                }
                for thread, (samples, weights) in sorted(threads.items())
            ],
        }
        return orjson.dumps(document)

    def svg(self, width: int = 1200, row: int = 16) -> str:
        """A flame graph: callers below callees, each box as wide as its share of the samples."""
        root = _Node("all")
        for stack, count in self.samples.items():
            root.add(stack, count)
        total = max(root.count, 1)
        boxes = list(root.boxes(0.0, 0))
        depth = max((level for _, _, level in boxes), default=0) + 1
        height = (depth + 2) * row
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
            f'font-size="11">',
            f'<text x="4" y="{row - 4}">modelserve CPU profile: {self.seconds:g} s at {self.hz} Hz, '
            f"{root.count} samples, {self.idle} of waiting threads left out (hover for details)</text>",
        ]
        for node, start, level in boxes:
            x, w = width * start / total, width * node.count / total
            if w < 0.5:
                continue
            y = height - (level + 1) * row
            label = html.escape(node.name)
            share = 100 * node.count / total
            # Cut the name, then escape it: cutting the escaped label could split an entity (&lt;) in two.
            fits = html.escape(node.name[: int(w / 7)]) if w > 21 else ""
            parts.append(
                f"<g><title>{label} ({node.count} samples, {share:.1f} %)</title>"
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="{_colour(node.name)}"/>'
                f'<text x="{x + 2:.1f}" y="{y + row - 4}">{fits}</text></g>'
            )
        parts.append("</svg>")
        return "\n".join(parts)


class Busy(Exception):
    """A profile is already being recorded: two at once would each distort the other."""


class Profiler:
    """Records one profile at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def record(self, seconds: float, hz: int, idle: bool = False) -> Profile:
        """Sample every other thread ``hz`` times a second for ``seconds``; blocks for that long.
        Waiting threads' samples are kept only when ``idle``."""
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be above 0 and at most {MAX_SECONDS:g}, not {seconds:g}")
        if not 1 <= hz <= MAX_HZ:
            raise ValueError(f"hz must be between 1 and {MAX_HZ}, not {hz}")
        if not self._lock.acquire(blocking=False):
            raise Busy("a profile is being recorded already; retry when it is done")
        try:
            return _sample(seconds, hz, idle)
        finally:
            self._lock.release()


def _sample(seconds: float, hz: int, idle: bool) -> Profile:
    profile = Profile(seconds, hz)
    me = threading.get_ident()
    period = 1 / hz
    deadline = time.monotonic() + seconds
    next_tick = time.monotonic()
    while next_tick < deadline:
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            stack = (names.get(ident, f"thread-{ident}"), *_stack(frame))
            if not idle and _waits(stack[-1]):
                profile.idle += 1
            else:
                profile.samples[stack] += 1
        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))
    return profile


def _waits(innermost: str) -> bool:
    """Whether a thread whose innermost Python frame is ``innermost`` waits in C code. A substring
    test: the selector's class is named (``EpollSelector.select``, ``KqueueSelector.select``)."""
    return any(marker in innermost for marker in WAITING)


def _stack(frame: FrameType | None) -> Iterator[str]:
    """Callers first."""
    names: list[str] = []
    while frame is not None:
        code = frame.f_code
        names.append(f"{code.co_qualname} ({_short(code.co_filename)}:{code.co_firstlineno})")
        frame = frame.f_back
    return reversed(names)


def _short(filename: str) -> str:
    """``package/module.py`` rather than the whole path: readable, and the same on every machine."""
    parts = PurePath(filename).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else filename


def _frame(name: str) -> dict[str, Any]:
    function, _, where = name.rpartition(" (")
    file, _, line = where.rstrip(")").rpartition(":")
    return {"name": function, "file": file, "line": int(line) if line.isdigit() else 0}


def _colour(name: str) -> str:
    """Warm colours, stable per function, as flame graphs are usually drawn."""
    seed = sum(name.encode()) % 60
    return f"hsl({seed}, 80%, {55 + seed % 15}%)"


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)

    def add(self, stack: Stack, count: int) -> None:
        self.count += count
        node = self
        for name in stack:
            node = node.children.setdefault(name, _Node(name))
            node.count += count

    def boxes(self, start: float, level: int) -> Iterator[tuple[_Node, float, int]]:
        yield self, start, level
        offset = start
        for child in sorted(self.children.values(), key=lambda n: n.name):
            yield from child.boxes(offset, level + 1)
            offset += child.count

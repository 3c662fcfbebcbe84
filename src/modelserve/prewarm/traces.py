"""Trace and model files: ``timestamp,model`` arrivals, ``model,size_mb,load_seconds`` models, and the
public Azure Functions 2019 trace (per-minute invocation counts per function)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelserve.prewarm.policy import CPU, ModelInfo

AZURE_MINUTES = 1440
_AZURE_KEYS = ("HashOwner", "HashApp", "HashFunction", "Trigger")


@dataclass(frozen=True, slots=True)
class Trace:
    """Arrivals in time order: ``models[i]`` was requested at ``times[i]`` seconds (any origin)."""

    times: list[float]
    models: list[str]

    @classmethod
    def from_arrivals(cls, arrivals: Iterable[tuple[float, str]]) -> Trace:
        """A trace of ``(time, model)`` pairs in any order; equal times keep their given order."""
        ordered = sorted(arrivals, key=lambda pair: pair[0])
        return cls([t for t, _ in ordered], [m for _, m in ordered])

    def __len__(self) -> int:
        return len(self.times)


class TraceFormatError(ValueError):
    """A trace or models file that cannot be read; the message names the file, the line and what to fix."""


def _rows(path: Path, header: Sequence[str]) -> Iterable[tuple[int, list[str]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None:
            raise TraceFormatError(f"{path} is empty; expected a header line {','.join(header)}")
        if [c.strip() for c in first[: len(header)]] != list(header):
            raise TraceFormatError(f"{path}: the first line must be the header {','.join(header)}, got {first}")
        for row in reader:
            if row:
                yield reader.line_num, row


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise TraceFormatError(f"{path} line {line}: {column} must be a number, got {text!r}")
    return value


def read_trace(path: Path) -> Trace:
    """Read a ``timestamp,model`` CSV (seconds, any start, any order)."""
    arrivals: list[tuple[float, str]] = []
    for line, row in _rows(path, ("timestamp", "model")):
        if len(row) < 2 or not row[1].strip():
            raise TraceFormatError(f"{path} line {line}: expected timestamp,model, got {row}")
        arrivals.append((_number(path, line, "timestamp", row[0]), row[1].strip()))
    if not arrivals:
        raise TraceFormatError(f"{path} has a header but no arrivals")
    return Trace.from_arrivals(arrivals)


def write_trace(trace: Trace, path: Path) -> None:
    """Write ``trace`` as the ``timestamp,model`` CSV :func:`read_trace` reads."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(("timestamp", "model"))
        out.writerows((f"{t:.3f}", m) for t, m in zip(trace.times, trace.models, strict=True))


def read_models(path: Path) -> dict[str, ModelInfo]:
    """Read a ``model,size_mb,load_seconds[,device]`` CSV; ``device`` is ``cpu`` (the default) or ``gpu``."""
    models: dict[str, ModelInfo] = {}
    for line, row in _rows(path, ("model", "size_mb", "load_seconds")):
        if len(row) < 3:
            raise TraceFormatError(f"{path} line {line}: expected model,size_mb,load_seconds[,device], got {row}")
        name = row[0].strip()
        if name in models:
            raise TraceFormatError(f"{path} line {line}: model {name} appears twice")
        device = row[3].strip() if len(row) > 3 and row[3].strip() else CPU
        try:
            models[name] = ModelInfo(
                name, _number(path, line, "size_mb", row[1]), _number(path, line, "load_seconds", row[2]), device
            )
        except ValueError as exc:
            raise TraceFormatError(f"{path} line {line}: {exc}") from None
    if not models:
        raise TraceFormatError(f"{path} has a header but no models")
    return models


def write_models(models: Mapping[str, ModelInfo], path: Path) -> None:
    """Write ``models`` as the CSV :func:`read_models` reads (a device column only where a model is on a GPU)."""
    with_device = any(m.device != CPU for m in models.values())
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(("model", "size_mb", "load_seconds", *(("device",) if with_device else ())))
        out.writerows(
            (m.name, f"{m.size_mb:g}", f"{m.load_seconds:g}", *((m.device,) if with_device else ()))
            for m in models.values()
        )


def read_azure(paths: Sequence[Path], *, by: str = "function", top: int | None = None) -> Trace:
    """Read Azure Functions 2019 invocation files (``invocations_per_function_md.anon.d01.csv`` ...), one per
    day in the order given.

    Each row counts a function's invocations in each minute of the day (columns ``1`` .. ``1440``). The trace
    has no finer times, so a minute's ``n`` invocations are spread evenly across it, at ``(i + 0.5) / n`` of
    the minute: the same file always gives the same trace. ``by`` names a model after its function (the hash
    of owner, app and function) or its app (owner and app, invocations summed); ``top`` keeps only the
    models with the most invocations, since a full day holds far more functions than a server holds models.
    """
    if by not in ("function", "app"):
        raise ValueError(f"by must be 'function' or 'app', got {by!r}")
    counts: dict[str, list[int]] = {}
    for day, path in enumerate(paths):
        for line, row in _rows(path, _AZURE_KEYS):
            if len(row) != len(_AZURE_KEYS) + AZURE_MINUTES:
                raise TraceFormatError(
                    f"{path} line {line}: expected {len(_AZURE_KEYS)} keys and {AZURE_MINUTES} minute counts, "
                    f"got {len(row)} columns"
                )
            name = f"{row[0]}.{row[1]}.{row[2]}" if by == "function" else f"{row[0]}.{row[1]}"
            minutes = counts.setdefault(name, [0] * (AZURE_MINUTES * len(paths)))
            base = day * AZURE_MINUTES
            for minute, text in enumerate(row[len(_AZURE_KEYS) :]):
                if text not in ("", "0"):
                    if not text.isdigit():
                        raise TraceFormatError(
                            f"{path} line {line}: minute {minute + 1} must be a whole count >= 0, got {text!r}"
                        )
                    minutes[base + minute] += int(text)
    if top is not None:
        kept = sorted(counts, key=lambda name: -sum(counts[name]))[:top]
        counts = {name: counts[name] for name in kept}
    arrivals = [
        ((minute + (i + 0.5) / n) * 60.0, name)
        for name, minutes in counts.items()
        for minute, n in enumerate(minutes)
        if n
        for i in range(n)
    ]
    if not arrivals:
        raise TraceFormatError(f"no invocations in {', '.join(map(str, paths))}")
    return Trace.from_arrivals(arrivals)

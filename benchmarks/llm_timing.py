"""The figures of benchmarks/llm.py: what one stream (or one generate() call) saw, and a row made of many.

Every system is judged by the same definitions, whatever it streams: a server may send two tokens in
one chunk (a token that ends inside a UTF-8 character waits for the next), so inter-token latency is
each stream's mean time per token after its first, (last arrival - first arrival) / (tokens - 1),
which no chunking changes; the longest waits a client sees between two chunks are the ``gap``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """One stream: its time to first token, when each piece of text arrived, and its output tokens."""

    first: float
    arrivals: list[float]
    tokens: int


@dataclass(frozen=True)
class Point:
    """One system at one number of concurrent streams (for raw generate(), the batch size): seconds and
    tokens/s. Inter-token figures are None where every stream came as a single piece of text."""

    size: str
    system: str
    streams: int
    tokens_s: float
    tokens: int  # output tokens received
    expected: int  # output tokens asked for
    ttft_p50: float
    ttft_p99: float
    itl_p50: float | None
    itl_p99: float | None
    gap_p99: float | None


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile: of three values, p50 is the middle one and p99 the largest."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summarize(size: str, system: str, streams: int, elapsed: float, timings: list[Timing], expected: int) -> Point:
    """The row of ``timings`` measured in ``elapsed`` seconds of wall time, ``expected`` tokens asked in all."""
    received = sum(t.tokens for t in timings)
    per_token = [(t.arrivals[-1] - t.arrivals[0]) / (t.tokens - 1) for t in timings if t.tokens > 1]
    gaps = [b - a for t in timings for a, b in itertools.pairwise(t.arrivals)]
    firsts = [t.first for t in timings]
    return Point(
        size,
        system,
        streams,
        received / elapsed,
        received,
        expected,
        quantile(firsts, 0.5),
        quantile(firsts, 0.99),
        quantile(per_token, 0.5) if per_token else None,
        quantile(per_token, 0.99) if per_token else None,
        quantile(gaps, 0.99) if gaps else None,
    )

"""Per-version counters in the shape of Triton's statistics extension, so its tools read them as-is.

Everything is recorded from the event loop (batch results come back to it), so no locks are needed.
Two figures go beyond Triton's, for a rollout's analysis (``rollout/``): the failures the model itself
caused, and each request's latency while someone holds a list for them (``latencies``; None, the rest
of the time, costs one attribute test).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from modelserve.errors import ModelserveError, classify

# Latencies a held list takes at most before it stops growing: memory stays bounded whatever the load.
LATENCY_SAMPLES = 100_000


@dataclass(slots=True)
class Duration:
    """A count of events and the nanoseconds they took in total."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        """Record ``count`` events that took ``ns`` nanoseconds together."""
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchDurations:
    """Where the time of batches of one size went."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStats:
    """Request and batch statistics of one model version since it loaded."""

    inference_count: int = 0  # samples inferred (a batch of 8 counts 8)
    execution_count: int = 0  # runtime calls
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)  # answered from the response cache: the lookups
    cache_miss: Duration = field(default_factory=Duration)  # looked up in vain: the lookups and the stores
    batches: defaultdict[int, BatchDurations] = field(default_factory=lambda: defaultdict(BatchDurations))
    model_failures: int = 0  # failed requests the model was at fault for (``Classification.model_at_fault``)
    latencies: list[int] | None = None  # successful requests' nanoseconds, while a rollout watches the version

    def record_request(self, ok: bool, ns: int) -> None:
        """One request answered, successfully or not, after ``ns`` nanoseconds end to end."""
        (self.success if ok else self.fail).add(ns)
        self.last_inference_ms = time.time_ns() // 1_000_000
        if ok and (held := self.latencies) is not None and len(held) < LATENCY_SAMPLES:
            held.append(ns)

    def record_failure(self, error: ModelserveError, ns: int) -> None:
        """One request that failed with ``error`` after ``ns`` nanoseconds."""
        self.record_request(False, ns)
        if classify(error).model_at_fault:
            self.model_failures += 1

    def record_batch(self, requests: int, samples: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One runtime call that served ``requests`` requests holding ``samples`` samples together."""
        self.execution_count += 1
        self.inference_count += samples
        self.compute_input.add(input_ns, requests)
        self.compute_infer.add(infer_ns, requests)
        self.compute_output.add(output_ns, requests)
        per_size = self.batches[samples]
        per_size.compute_input.add(input_ns)
        per_size.compute_infer.add(infer_ns)
        per_size.compute_output.add(output_ns)

"""Usage accounting: what each model version used, per region and hour, kept in the traffic history's
database (``usage_buckets``) for ``modelserve regions cost`` to price.

Nothing here runs per request. The server already counts, per loaded version, its requests, samples
and compute time (``models/stats.py``, Triton's statistics) and knows the memory each version holds
(``models/records.py``); ``UsageSampler`` reads those on the event loop at every history flush and
turns them into deltas, and the history's writer thread writes the deltas with the traffic buckets.
Cross-region bytes come from the replicator, through ``record_transfer``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from modelserve.repository.config import Platform
from modelserve.runtimes.base import runtime_class

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelserve.models.records import ModelVersion
    from modelserve.runtimes.base import Runtime

# Usage is priced per hour at the finest: an hour's rows are few (one per version and device), and a
# day, the unit of budgets and anomalies, is 24 of them whatever HISTORY_BUCKET_SEC is.
USAGE_BUCKET_S = 3600
CPU = "cpu"
NETWORK = "network"  # the device of transfer rows
GPU_PREFIX = "gpu:"
# ONNX Runtime providers that run on an NVIDIA GPU; a session lists the one it prefers first.
_GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


@dataclass(slots=True)
class Usage:
    """Amounts used; adding two adds each field."""

    requests: int = 0
    inferences: int = 0
    compute_seconds: float = 0.0
    memory_byte_seconds: float = 0.0
    gpu_memory_byte_seconds: float = 0.0
    tokens: int = 0
    transfer_bytes: int = 0

    def add(self, other: Usage) -> None:
        """Fold ``other`` into this one."""
        for name in USAGE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def is_empty(self) -> bool:
        """Whether nothing was used."""
        return not any(getattr(self, name) for name in USAGE_FIELDS)


USAGE_FIELDS = tuple(f.name for f in fields(Usage))
# model, version, region, device ("cpu", "gpu:<type>", "network"), peer region ("" but for transfers),
# bucket start (epoch seconds, UTC, a multiple of USAGE_BUCKET_S)
UsageKey = tuple[str, str, str, str, str, int]


def bucket_of(at: float) -> int:
    """The start of the usage bucket that holds ``at`` (epoch seconds)."""
    return int(at // USAGE_BUCKET_S) * USAGE_BUCKET_S


def gpu_device(gpu_type: str) -> str:
    """The device label of a version running on a GPU of ``gpu_type`` (NVML's name, "NVIDIA " dropped)."""
    return GPU_PREFIX + (gpu_type.removeprefix("NVIDIA ").strip() or "unknown")


def runs_on_gpu(runtime: Runtime) -> bool:
    """Whether ``runtime`` computes on a GPU: TensorRT always; TorchScript when its module was put on a
    CUDA device; ONNX Runtime when its session's first provider is CUDA or TensorRT."""
    if isinstance(runtime, runtime_class(Platform.TENSORRT)):
        return True
    if isinstance(runtime, runtime_class(Platform.TORCHSCRIPT)):
        # The runtime keeps the device it chose (config.yaml `device`, else CUDA when present) to itself.
        return str(getattr(runtime, "_device", "cpu")).startswith("cuda")
    # Only ONNX Runtime's sessions have providers; asked by attribute, as importing its module would
    # import onnxruntime into a server that serves none.
    providers = getattr(runtime, "providers", None)
    return isinstance(providers, list) and bool(providers) and providers[0] in _GPU_PROVIDERS


class UsageRecorder:
    """Usage waiting to be written, by key; ``flush`` is what the history's writer calls each interval.

    Thread-safe: the sampler adds on the event loop, the writer takes from its thread. A write that
    fails keeps its rows for the next one; they are one per version and hour, so an outage of a day
    holds a few thousand at most.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[UsageKey, Usage] = {}

    def add(self, key: UsageKey, usage: Usage) -> None:
        """Add ``usage`` to what ``key`` has waiting."""
        with self._lock:
            if (pending := self._pending.get(key)) is None:
                self._pending[key] = usage
            else:
                pending.add(usage)

    def take(self) -> dict[UsageKey, Usage]:
        """Everything waiting; the recorder starts afresh."""
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def give_back(self, taken: dict[UsageKey, Usage]) -> None:
        """Return rows that could not be written, to go with the next write."""
        for key, usage in taken.items():
            self.add(key, usage)

    def flush(self, engine: Engine) -> None:
        """Write what waits in one transaction; on failure keep it and raise (the writer logs and retries)."""
        from modelserve.regions import usage_store

        taken = self.take()
        try:
            usage_store.write(engine, taken)
        except BaseException:
            self.give_back(taken)
            raise


@dataclass(slots=True)
class _Seen:
    """A version as the last sample left it."""

    record: ModelVersion  # held so that a version replaced between samples still gives its last counts
    device: str | None = None  # known once the version is seen holding its runtime
    requests: int = 0
    inferences: int = 0
    compute_ns: int = 0
    memory: int = 0
    gpu_memory: int = 0


class UsageSampler:
    """Turns the server's own per-version counters into usage deltas, each time ``sample`` is called.

    Call ``sample`` on the event loop (the records are the loop's) every flush interval, and once more
    when the server stops, after its models have unloaded. Requests, samples and compute time are
    exact (counter differences, unloaded versions included: they keep their statistics); memory held
    is integrated between samples with the trapezoid rule, so a version loaded or unloaded between two
    samples counts half the interval. A version loaded, used and reloaded between two samples is the
    one whose use is lost: its record is gone before a sample sees it.
    """

    def __init__(
        self,
        versions: Callable[[], Iterable[ModelVersion]],
        recorder: UsageRecorder,
        region: str,
        gpu_type: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._versions = versions  # every version the server has records of: ModelManager.every_version
        self._recorder = recorder
        self._region = region
        self._gpu = gpu_device(gpu_type)
        self._clock = clock
        self._last = clock()
        self._seen: dict[int, _Seen] = {}

    def sample(self) -> None:
        """Add what every version used since the last sample to the recorder."""
        now = self._clock()
        elapsed, self._last = max(0.0, now - self._last), now
        bucket = bucket_of(now)
        known = {id(record): record for record in self._versions()}
        for key, record in known.items():
            if key not in self._seen:
                self._seen[key] = _Seen(record)
        for key, seen in list(self._seen.items()):
            record, stats = seen.record, seen.record.stats
            runtime = record.runtime
            if seen.device is None and runtime is not None:
                seen.device = self._gpu if runs_on_gpu(runtime) else CPU
            requests = stats.success.count + stats.fail.count
            compute_ns = stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
            memory = record.memory.get("CPU", 0) if runtime is not None else 0
            gpu_memory = record.memory.get("GPU", 0) if runtime is not None else 0
            usage = Usage(
                requests=requests - seen.requests,
                inferences=stats.inference_count - seen.inferences,
                compute_seconds=(compute_ns - seen.compute_ns) / 1e9,
                memory_byte_seconds=(seen.memory + memory) / 2 * elapsed,
                gpu_memory_byte_seconds=(seen.gpu_memory + gpu_memory) / 2 * elapsed,
            )
            if not usage.is_empty():
                key_of = (record.name, str(record.version), self._region, seen.device or self._device_of(record), "")
                self._recorder.add((*key_of, bucket), usage)
            seen.requests, seen.inferences, seen.compute_ns = requests, stats.inference_count, compute_ns
            seen.memory, seen.gpu_memory = memory, gpu_memory
            if key not in known:  # replaced by a reload since: its counts are all in
                del self._seen[key]

    def _device_of(self, record: ModelVersion) -> str:
        # A version loaded and unloaded between two samples was never seen with its runtime: TensorRT
        # runs on the GPU; the others are taken for the CPU, where they run unless placed otherwise.
        spec = record.spec
        return self._gpu if spec is not None and spec.platform is Platform.TENSORRT else CPU


_migrated: weakref.WeakSet[Engine] = weakref.WeakSet()


def record_transfer(
    engine: Engine,
    model: str,
    version: str,
    source_region: str,
    target_region: str,
    nbytes: int,
    *,
    at: float | None = None,
) -> None:
    """Record ``nbytes`` of ``model`` version ``version`` copied from ``source_region``'s store to
    ``target_region``'s, as cross-region transfer priced at the source region's rate.

    Call it as bytes cross (per file or part copied, re-copies included: they cost as much), with the
    engine on the traffic history's database (``modelserve.db.open_engine(settings.history_database_url)``).
    It blocks on the database, so from async code call it through ``asyncio.to_thread``. Each call adds
    to the row of its hour, so calls from several processes add up; the schema is brought up to date
    on an engine's first call. ``at`` (epoch seconds) defaults to now.
    """
    if nbytes < 0:
        raise ValueError(f"a transfer of {nbytes} bytes: bytes copied cannot be negative")
    if source_region == target_region:
        raise ValueError(f"a copy within {source_region} is not a cross-region transfer")
    from modelserve.history import store
    from modelserve.regions import usage_store

    if engine not in _migrated:
        store.migrate(engine)
        _migrated.add(engine)
    key = (model, version, source_region, NETWORK, target_region, bucket_of(time.time() if at is None else at))
    usage_store.write(engine, {key: Usage(transfer_bytes=nbytes)})

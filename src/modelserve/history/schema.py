"""The traffic history's tables: requests per model version per time bucket, and what serving them used.

Rows hold counts, never single requests, so the table grows with models x time, not with traffic,
and rows written by several processes (``--workers``, pods) for the same bucket add up. Latency is
kept as a coarse histogram rather than a percentile because histograms add up too: a p99 over any
window, model or set of pods is read from summed columns, which no stored percentile allows.
Changing this file means adding a migration in ``migrations/versions`` that makes the same change.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from modelserve.errors import Outcome

TABLE = "traffic_buckets"
USAGE_TABLE = "usage_buckets"
# Alembic's revision table for these migrations, named for them: other stores may share the database,
# each with its own migrations.
VERSION_TABLE = "traffic_history_version"

# How a request ended, in the order the recorder counts them (errors.py classifies each error as one).
# not_ready is demand that found the model unloaded, loading or its breaker open: the cold starts a
# pre-warming policy exists to avoid.
OUTCOMES = tuple(outcome.value for outcome in Outcome)

# Upper bounds (s) of the latency histogram's columns; the last column counts the slower rest. Steps of
# about 3x: coarse, but it separates a warm answer from a load, a queue and a timeout.
LATENCY_BOUNDS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
LATENCY_COLUMNS = (
    "latency_le_1ms",
    "latency_le_3ms",
    "latency_le_10ms",
    "latency_le_30ms",
    "latency_le_100ms",
    "latency_le_300ms",
    "latency_le_1s",
    "latency_le_3s",
    "latency_le_10s",
    "latency_gt_10s",
)
# Every column a flush adds to an existing row.
COUNTERS = ("requests", *OUTCOMES, *LATENCY_COLUMNS)


class Base(DeclarativeBase):
    """Declarative base whose constraint names are the same on every back-end, so migrations can name them."""

    metadata = MetaData(
        naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_name)s"},
    )


class TrafficBucket(Base):
    """Requests of one model version that arrived in ``[bucket_start, bucket_start + bucket_seconds)``."""

    __tablename__ = TABLE

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" when the request named none that existed
    # Seconds since the epoch (UTC) of the arrival, not of the answer: integers compare and bin alike everywhere.
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    bucket_seconds: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger)
    ok: Mapped[int] = mapped_column(BigInteger)
    not_ready: Mapped[int] = mapped_column(BigInteger)
    rejected: Mapped[int] = mapped_column(BigInteger)
    invalid: Mapped[int] = mapped_column(BigInteger)
    timed_out: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    latency_sum_s: Mapped[float] = mapped_column(Float)
    latency_le_1ms: Mapped[int] = mapped_column(BigInteger)
    latency_le_3ms: Mapped[int] = mapped_column(BigInteger)
    latency_le_10ms: Mapped[int] = mapped_column(BigInteger)
    latency_le_30ms: Mapped[int] = mapped_column(BigInteger)
    latency_le_100ms: Mapped[int] = mapped_column(BigInteger)
    latency_le_300ms: Mapped[int] = mapped_column(BigInteger)
    latency_le_1s: Mapped[int] = mapped_column(BigInteger)
    latency_le_3s: Mapped[int] = mapped_column(BigInteger)
    latency_le_10s: Mapped[int] = mapped_column(BigInteger)
    latency_gt_10s: Mapped[int] = mapped_column(BigInteger)


# Every column a write adds to an existing usage row.
USAGE_COUNTERS = (
    "requests",
    "inferences",
    "compute_seconds",
    "memory_byte_seconds",
    "gpu_memory_byte_seconds",
    "tokens",
    "transfer_bytes",
)


class UsageBucket(Base):
    """What one model version used in one region in ``[bucket_start, bucket_start + bucket_seconds)``:
    the figures a price table turns into cost (``modelserve.regions.cost``).

    Serving rows (``device`` ``cpu`` or ``gpu:<type>``) are sampled from the server's own counters;
    transfer rows (``device`` ``network``) are the bytes the replicator copied from ``region`` to
    ``peer_region``. Rows add up like the traffic buckets', across processes, pods and flushes.
    """

    __tablename__ = USAGE_TABLE

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    peer_region: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" but on transfer rows
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    bucket_seconds: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger)
    inferences: Mapped[int] = mapped_column(BigInteger)  # samples: a batch of 8 in one request counts 8
    compute_seconds: Mapped[float] = mapped_column(Float)  # time the runtime ran the version's batches
    memory_byte_seconds: Mapped[float] = mapped_column(Float)  # host memory held, integrated over time
    gpu_memory_byte_seconds: Mapped[float] = mapped_column(Float)
    tokens: Mapped[int] = mapped_column(BigInteger)  # generated tokens; no served model produces any yet
    transfer_bytes: Mapped[int] = mapped_column(BigInteger)

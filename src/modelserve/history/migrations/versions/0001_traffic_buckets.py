"""traffic_buckets: per-model time buckets of inference requests.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_COUNTERS = (
    "requests",
    "ok",
    "not_ready",
    "rejected",
    "invalid",
    "timed_out",
    "failed",
)
_LATENCY = (
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


def upgrade() -> None:
    """Create the table as it was first released (written out: a migration must not follow later models)."""
    op.create_table(
        "traffic_buckets",
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("bucket_start", sa.BigInteger(), nullable=False),
        sa.Column("bucket_seconds", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _COUNTERS),
        sa.Column("latency_sum_s", sa.Float(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _LATENCY),
        sa.PrimaryKeyConstraint("model", "version", "bucket_start", name="pk_traffic_buckets"),
    )
    op.create_index("ix_traffic_buckets_bucket_start", "traffic_buckets", ["bucket_start"])


def downgrade() -> None:
    """Drop the table and its history."""
    op.drop_index("ix_traffic_buckets_bucket_start", table_name="traffic_buckets")
    op.drop_table("traffic_buckets")

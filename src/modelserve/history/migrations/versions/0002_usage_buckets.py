"""usage_buckets: what each model version used per region and hour, for cost per region and model.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY = ("model", "version", "region", "device", "peer_region", "bucket_start")


def upgrade() -> None:
    """Create the table as it was first released (written out: a migration must not follow later models)."""
    op.create_table(
        "usage_buckets",
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("peer_region", sa.String(64), nullable=False),
        sa.Column("bucket_start", sa.BigInteger(), nullable=False),
        sa.Column("bucket_seconds", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        sa.Column("compute_seconds", sa.Float(), nullable=False),
        sa.Column("memory_byte_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_memory_byte_seconds", sa.Float(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("transfer_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, name="pk_usage_buckets"),
    )
    op.create_index("ix_usage_buckets_bucket_start", "usage_buckets", ["bucket_start"])


def downgrade() -> None:
    """Drop the table and what it recorded."""
    op.drop_index("ix_usage_buckets_bucket_start", table_name="usage_buckets")
    op.drop_table("usage_buckets")

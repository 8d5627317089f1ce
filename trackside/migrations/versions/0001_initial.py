"""Raw events, bot counters, daily salts, applied batch ids.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("nav", sa.String(16), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("visitor", sa.String(32), nullable=False),
        sa.Column("device", sa.String(16), nullable=False),
        sa.Column("browser", sa.String(64), nullable=False),
        sa.Column("os", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64)),
        sa.Column("author_id", sa.String(64)),
        sa.Column("content_kind", sa.String(32)),
        sa.Column("content_id", sa.String(128)),
        sa.Column("view_type", sa.String(16)),
        sa.Column("country", sa.String(2)),
        sa.Column("referrer", sa.String(255)),
        sa.Column("utm_source", sa.String(100)),
        sa.Column("utm_medium", sa.String(100)),
        sa.Column("utm_campaign", sa.String(100)),
        sa.Column("error_type", sa.String(32)),
        sa.Column("event_name", sa.String(32)),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("unverified", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_events_ts", "events", ["ts"])
    op.create_index("ix_events_day_kind", "events", ["day", "kind"])
    op.create_index("ix_events_content", "events", ["content_kind", "content_id", "ts"])
    op.create_table(
        "bot_hits",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("bot", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(128), primary_key=True),
        sa.Column("hits", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "salts",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "applied_batches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("applied_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("applied_batches", "salts", "bot_hits", "events"):
        op.drop_table(table)

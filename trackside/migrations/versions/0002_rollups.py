"""Daily rollups: per site and per content item, with their breakdowns, and the state of each day.

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


def _counts(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in names]


def upgrade() -> None:
    op.create_table(
        "rollup_days",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("rolled_at", sa.DateTime()),
        sa.Column("events", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "daily_site",
        sa.Column("day", sa.Date(), primary_key=True),
        *_counts(
            "page_views",
            "page_views_authenticated",
            "unique_visitors",
            "unique_visitors_authenticated",
            "signups",
            "uploads",
            "api_calls",
            "errors",
            "impressions",
            "bot_hits",
        ),
        sa.Column("users_sketch", sa.LargeBinary()),
    )
    op.create_table(
        "daily_site_dims",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("dim", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        *_counts("count", "count_authenticated", "visitors", "visitors_authenticated"),
    )
    op.create_table(
        "daily_content",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("content_kind", sa.String(32), primary_key=True),
        sa.Column("content_id", sa.String(128), primary_key=True),
        *_counts(
            "views",
            "views_authenticated",
            "unique_viewers",
            "unique_viewers_authenticated",
            "impressions",
            "impressions_authenticated",
        ),
        sa.Column("first_at", sa.DateTime()),
        sa.Column("last_at", sa.DateTime()),
        sa.Column("users_sketch", sa.LargeBinary()),
    )
    op.create_table(
        "daily_content_dims",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("content_kind", sa.String(32), primary_key=True),
        sa.Column("content_id", sa.String(128), primary_key=True),
        sa.Column("dim", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        *_counts("count", "count_authenticated"),
    )
    op.create_index("ix_daily_content_item", "daily_content", ["content_kind", "content_id", "day"])


def downgrade() -> None:
    for table in ("daily_content_dims", "daily_content", "daily_site_dims", "daily_site", "rollup_days"):
        op.drop_table(table)

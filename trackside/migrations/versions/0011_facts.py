"""Fact rows derived at ingest (page views, looks, impressions, site events, visits, a visitor-day's
API counts), the item -> author map, and the marks of visitor-days still to derive.

Raw events stored before this revision have no facts: every visitor-day of them is marked, and the
worker (or the embedded writer) derives them in the background; a rollup derives its day's first.
The events table's partial (day, visitor) index for signed-in rows becomes a full one: derivation
reads one visitor's day.

Revision ID: 0011_facts
Revises: 0010_pruned_days
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_facts"
down_revision = "0010_pruned_days"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fact_page_views",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("id", sa.String(length=36), primary_key=True, nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("who", sa.String(length=66), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("visit_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("referrer", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("utm_source", sa.String(length=100), nullable=True),
        sa.Column("utm_medium", sa.String(length=100), nullable=True),
        sa.Column("utm_campaign", sa.String(length=100), nullable=True),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("browser", sa.String(length=64), nullable=False),
        sa.Column("os", sa.String(length=64), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("view_type", sa.String(length=16), nullable=True),
        sa.Column("time_on_page_ms", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_fact_page_views_visitor", "fact_page_views", ["day", "visitor"])
    op.create_table(
        "fact_looks",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("id", sa.String(length=36), primary_key=True, nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("who", sa.String(length=66), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("content_kind", sa.String(length=32), nullable=False),
        sa.Column("content_id", sa.String(length=128), nullable=False),
        sa.Column("view_type", sa.String(length=16), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("referrer", sa.String(length=255), nullable=True),
    )
    op.create_index("ix_fact_looks_item", "fact_looks", ["content_kind", "content_id", "day"])
    op.create_index("ix_fact_looks_visitor", "fact_looks", ["day", "visitor"])
    op.create_table(
        "fact_impressions",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("id", sa.String(length=36), primary_key=True, nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("who", sa.String(length=66), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("content_kind", sa.String(length=32), nullable=False),
        sa.Column("content_id", sa.String(length=128), nullable=False),
        sa.Column("view_type", sa.String(length=16), nullable=False),
    )
    op.create_index("ix_fact_impressions_item", "fact_impressions", ["content_kind", "content_id", "day"])
    op.create_index("ix_fact_impressions_visitor", "fact_impressions", ["day", "visitor"])
    op.create_table(
        "fact_site_events",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("id", sa.String(length=36), primary_key=True, nullable=False),
        sa.Column("kind", sa.String(length=16), primary_key=True, nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("who", sa.String(length=66), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("visit_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
    )
    op.create_index("ix_fact_site_events_visitor", "fact_site_events", ["day", "visitor"])
    op.create_table(
        "fact_visitor_days",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("visitor", sa.String(length=32), primary_key=True, nullable=False),
        sa.Column("api_calls", sa.BigInteger(), nullable=False),
        sa.Column("api_calls_authenticated", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "fact_visits",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("id", sa.String(length=36), primary_key=True, nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("who", sa.String(length=66), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=False),
        sa.Column("duration_s", sa.BigInteger(), nullable=False),
        sa.Column("page_views", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("bounce", sa.Boolean(), nullable=False),
        sa.Column("entry_page", sa.String(length=512), nullable=True),
        sa.Column("exit_page", sa.String(length=512), nullable=True),
        sa.Column("entry_label", sa.String(length=128), nullable=True),
        sa.Column("exit_label", sa.String(length=128), nullable=True),
        sa.Column("referrer", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("utm_source", sa.String(length=100), nullable=True),
        sa.Column("utm_medium", sa.String(length=100), nullable=True),
        sa.Column("utm_campaign", sa.String(length=100), nullable=True),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("browser", sa.String(length=64), nullable=False),
        sa.Column("os", sa.String(length=64), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
    )
    op.create_index("ix_fact_visits_visitor", "fact_visits", ["day", "visitor"])
    op.create_table(
        "item_authors",
        sa.Column("content_kind", sa.String(length=32), primary_key=True, nullable=False),
        sa.Column("content_id", sa.String(length=128), primary_key=True, nullable=False),
        sa.Column("author_id", sa.String(length=64), nullable=False),
    )
    op.create_table(
        "derive_marks",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("visitor", sa.String(length=32), primary_key=True, nullable=False),
        sa.Column("marked_at", sa.DateTime(), nullable=False),
    )
    op.drop_index("ix_events_signed_in_visitor", table_name="events")
    op.create_index("ix_events_day_visitor", "events", ["day", "visitor"])
    op.execute(
        "INSERT INTO derive_marks (day, visitor, marked_at) "
        "SELECT day, visitor, CURRENT_TIMESTAMP FROM events GROUP BY day, visitor"
    )


def downgrade() -> None:
    op.drop_index("ix_events_day_visitor", table_name="events")
    op.create_index(
        "ix_events_signed_in_visitor",
        "events",
        ["day", "visitor"],
        sqlite_where=sa.text("user_id IS NOT NULL"),
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    for table in (
        "derive_marks",
        "item_authors",
        "fact_visits",
        "fact_visitor_days",
        "fact_site_events",
        "fact_impressions",
        "fact_looks",
        "fact_page_views",
    ):
        op.drop_table(table)

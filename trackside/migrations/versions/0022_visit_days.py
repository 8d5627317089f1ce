"""Visits' daily rows.

`visit_dim_days`: per closed day, visit dimension (source, referrer, UTM source, medium and campaign,
device, browser, OS, country, entry and exit page; "" for all visits) and value, the visits, bounces,
duration, page views, events and distinct anonymous visitors of the visits entering with it;
`visit_dim_users`: the signed-in users among them, one row each. Written by the rollup of each
closed day (`trackside.storage.visit_days`), read by v2 over rolled days. Filled here for the days
already rolled (and clean) whose visit facts are still kept.

Revision ID: 0022_visit_days
Revises: 0021_funnel_days
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from alembic import op

revision = "0022_visit_days"
down_revision = "0021_funnel_days"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from trackside.storage.visit_days import fill_statements

    op.create_table(
        "visit_dim_days",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("dim", sa.String(length=24), primary_key=True, nullable=False),
        sa.Column("value", sa.String(length=512), primary_key=True, nullable=False),
        sa.Column("visits", sa.BigInteger(), nullable=False),
        sa.Column("bounces", sa.BigInteger(), nullable=False),
        sa.Column("duration", sa.BigInteger(), nullable=False),
        sa.Column("page_views", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("anon_visitors", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "visit_dim_users",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("dim", sa.String(length=24), primary_key=True, nullable=False),
        sa.Column("value", sa.String(length=512), primary_key=True, nullable=False),
        sa.Column("who", sa.String(length=66), primary_key=True, nullable=False),
    )
    bind = op.get_bind()
    rolled = bind.execute(
        sa.text(
            "SELECT day FROM rollup_days WHERE dirty = false AND rolled_at IS NOT NULL "
            "AND day IN (SELECT DISTINCT day FROM fact_visits) ORDER BY day"
        )
    ).scalars()
    for day in list(rolled):
        for statement in fill_statements(day if isinstance(day, date) else date.fromisoformat(str(day)[:10])):
            bind.execute(statement)


def downgrade() -> None:
    op.drop_table("visit_dim_users")
    op.drop_table("visit_dim_days")

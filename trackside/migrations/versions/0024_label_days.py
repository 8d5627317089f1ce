"""Route labels' daily rows.

`label_days`: per closed day and route label, the page views, events, visits, time on page and scroll
depth (sums and counts) and distinct anonymous visitors of the day's page views and site events with
that label (and a marker row, label "", for every rolled day); `label_users`: the signed-in visitors
among them, one row each. Written by the rollup of each closed day (`trackside.storage.label_days`),
read by v2 over rolled days (the top pages panel). Filled here for the days already rolled (and
clean) whose page view facts are still kept.

Revision ID: 0024_label_days
Revises: 0023_visitor_sums
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from alembic import op

revision = "0024_label_days"
down_revision = "0023_visitor_sums"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from trackside.storage.label_days import FIGURES, fill_statements

    op.create_table(
        "label_days",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("label", sa.String(length=128), primary_key=True, nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in FIGURES),
    )
    op.create_table(
        "label_users",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("label", sa.String(length=128), primary_key=True, nullable=False),
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
    op.drop_table("label_users")
    op.drop_table("label_days")

"""Journeys' daily rows.

`journey_days`: per closed day and route label, its passages (page views) and distinct visits by the
route label of the page before it (`side` "prev") and after it ("next") in its visit, `neighbour` ""
for none (the entry, the exit), and its totals (`side` "page"). Written by the rollup of each closed
day (`trackside.storage.journey_days`), read by journeys over rolled days; pruned with the daily
rows. Filled here for the days already rolled (and clean) from the page view facts still kept.

Revision ID: 0020_journey_days
Revises: 0019_fact_sums
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_journey_days"
down_revision = "0019_fact_sums"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journey_days",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("label", sa.String(length=128), primary_key=True, nullable=False),
        sa.Column("side", sa.String(length=4), primary_key=True, nullable=False),
        sa.Column("neighbour", sa.String(length=128), primary_key=True, nullable=False),
        sa.Column("passages", sa.BigInteger(), nullable=False),
        sa.Column("visits", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_journey_days_label", "journey_days", ["label", "day"])
    if op.get_bind().dialect.name == "postgresql":
        # The per-visit hash aggregates in memory rather than spilled to disk (this transaction only).
        op.execute("SET LOCAL work_mem = '256MB'")
    rolled = "SELECT day FROM rollup_days WHERE dirty = false AND rolled_at IS NOT NULL"
    # Distinct visits in two steps (per visit, then per neighbour): hash aggregates, where COUNT(DISTINCT)
    # would sort every page view kept, three times.
    for side, neighbour in (("prev", "COALESCE(prev_label, '')"), ("next", "COALESCE(next_label, '')"), ("page", "''")):
        keys = "day, label, visit_id" if side == "page" else f"day, label, {neighbour}, visit_id"
        op.execute(
            "INSERT INTO journey_days (day, label, side, neighbour, passages, visits) "
            f"SELECT day, label, '{side}', neighbour, SUM(n), COUNT(*) FROM ("
            f"SELECT day, label, {neighbour} AS neighbour, visit_id, COUNT(*) AS n FROM fact_page_views "
            f"WHERE day IN ({rolled}) GROUP BY {keys}) AS per_visit GROUP BY day, label, neighbour"
        )


def downgrade() -> None:
    op.drop_index("ix_journey_days_label", table_name="journey_days")
    op.drop_table("journey_days")

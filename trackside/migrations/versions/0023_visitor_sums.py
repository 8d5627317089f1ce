"""Anonymous uniques of the kept sums: one row per visitor-day.

`fact_sum_visitors`: per day and anonymous visitor, its page views per breakdown key and its looks
per item, as JSON (`trackside.storage.visitor_sums`), instead of one `fact_sum_who` /
`item_sum_who` row per key and visitor. Filled here from those rows ("v:<visitor>"), which are
then deleted; signed-in ("u:") rows stay where they are.

Revision ID: 0023_visitor_sums
Revises: 0022_visit_days
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_visitor_sums"
down_revision = "0022_visit_days"
branch_labels = None
depends_on = None

_ROWS = (
    "SELECT day, substr(who, 3) AS visitor, 'p' AS k, dim AS a, key AS b, n FROM fact_sum_who "
    "WHERE who LIKE 'v:%' AND n <> 0 "
    "UNION ALL SELECT day, substr(who, 3), 'i', kind, item, n FROM item_sum_who WHERE who LIKE 'v:%' AND n <> 0"
)


def upgrade() -> None:
    op.create_table(
        "fact_sum_visitors",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("visitor", sa.String(length=32), primary_key=True, nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        agg = "json_agg(json_build_array(k, a, b, n) ORDER BY k, a, b)::text"
    else:
        agg = "json_group_array(json_array(k, a, b, n))"
    op.execute(
        f"INSERT INTO fact_sum_visitors (day, visitor, counts) SELECT day, visitor, {agg} FROM ({_ROWS}) AS r "
        "GROUP BY day, visitor"
    )
    op.execute("DELETE FROM fact_sum_who WHERE who LIKE 'v:%'")
    op.execute("DELETE FROM item_sum_who WHERE who LIKE 'v:%'")


def downgrade() -> None:
    # The anonymous rows are rebuilt by re-deriving; going back drops what this made.
    op.drop_table("fact_sum_visitors")

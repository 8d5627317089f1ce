"""Page-view sums kept by derivation (`trackside.storage.day_sums`): `fact_sum_days` (days whose
sums are complete), `fact_sum_who` (page views per day, breakdown, key and unique) and `fact_sums`
(per day, breakdown and key: page views, signed-in ones, uniques, signed-in uniques). Backfilled
here from the page-view facts of the days not rolled up (rolled days are read from daily rows).

Revision ID: 0019_fact_sums
Revises: 0018_journeys_retention
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_fact_sums"
down_revision = "0018_journeys_retention"
branch_labels = None
depends_on = None

_DIMS = ("label", "country", "device", "browser", "os", "referrer", "utm_source")
_UNROLLED = (
    "SELECT DISTINCT day FROM fact_page_views WHERE day NOT IN "
    "(SELECT day FROM rollup_days WHERE rolled_at IS NOT NULL AND dirty = {false})"
)


def upgrade() -> None:
    op.create_table("fact_sum_days", sa.Column("day", sa.Date(), primary_key=True, nullable=False))
    op.create_table(
        "fact_sum_who",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("dim", sa.String(length=16), primary_key=True, nullable=False),
        sa.Column("key", sa.String(length=255), primary_key=True, nullable=False),
        sa.Column("who", sa.String(length=66), primary_key=True, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_fact_sum_who_who", "fact_sum_who", ["day", "who"])
    op.create_table(
        "fact_sums",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("dim", sa.String(length=16), primary_key=True, nullable=False),
        sa.Column("key", sa.String(length=255), primary_key=True, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("n_auth", sa.BigInteger(), nullable=False),
        sa.Column("visitors", sa.BigInteger(), nullable=False),
        sa.Column("visitors_auth", sa.BigInteger(), nullable=False),
    )
    false = "false" if op.get_bind().dialect.name == "postgresql" else "0"
    unrolled = _UNROLLED.format(false=false)
    op.execute(f"INSERT INTO fact_sum_days (day) {unrolled}")
    parts = ["SELECT day, '' AS dim, '' AS key, who, COUNT(*) AS n FROM fact_page_views p "
             "WHERE day IN (SELECT day FROM fact_sum_days) GROUP BY day, who"]  # fmt: skip
    for dim in _DIMS:
        parts.append(
            f"SELECT day, '{dim}', {dim}, who, COUNT(*) FROM fact_page_views p "
            f"WHERE day IN (SELECT day FROM fact_sum_days) AND {dim} IS NOT NULL AND {dim} <> '' "
            f"GROUP BY day, {dim}, who"
        )
    hour = "CASE WHEN hour < 10 THEN '0' || CAST(hour AS VARCHAR) ELSE CAST(hour AS VARCHAR) END"
    parts.append(
        f"SELECT day, 'hour', {hour}, who, COUNT(*) FROM fact_page_views p "
        f"WHERE day IN (SELECT day FROM fact_sum_days) GROUP BY day, {hour}, who"
    )
    op.execute("INSERT INTO fact_sum_who (day, dim, key, who, n) " + " UNION ALL ".join(parts))
    signed_in = "CASE WHEN who LIKE 'u:%' THEN {} ELSE 0 END"
    op.execute(
        "INSERT INTO fact_sums (day, dim, key, n, n_auth, visitors, visitors_auth) "
        f"SELECT day, dim, key, SUM(n), SUM({signed_in.format('n')}), COUNT(*), SUM({signed_in.format('1')}) "
        "FROM fact_sum_who GROUP BY day, dim, key"
    )


def downgrade() -> None:
    op.drop_table("fact_sums")
    op.drop_index("ix_fact_sum_who_who", table_name="fact_sum_who")
    op.drop_table("fact_sum_who")
    op.drop_table("fact_sum_days")

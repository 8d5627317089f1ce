"""Sums kept by derivation: of page views (`trackside.storage.day_sums`): `fact_sum_days` (days whose
sums are complete), `fact_sum_who` (page views per day, breakdown, key and unique) and `fact_sums`
(per day, breakdown and key: page views, signed-in ones, uniques, signed-in uniques); of each item's
looks and impressions (`trackside.storage.item_sums`): `item_sum_who`, `item_sums`. Backfilled
here from the facts of the days not rolled up (rolled days are read from daily rows). The looks'
item index gets the time (an item's first and last look of a day: the ends of its range).

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
    "SELECT day FROM fact_page_views UNION SELECT day FROM fact_looks UNION SELECT day FROM fact_impressions "
    "EXCEPT SELECT day FROM rollup_days WHERE rolled_at IS NOT NULL AND dirty = {false}"
)
_KEPT = "day IN (SELECT day FROM fact_sum_days)"
_HOUR = "CASE WHEN hour < 10 THEN '0' || CAST(hour AS VARCHAR) ELSE CAST(hour AS VARCHAR) END"
_USER = "COALESCE(user_id, '')"


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
    op.create_table(
        "item_sum_who",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("kind", sa.String(length=32), primary_key=True, nullable=False),
        sa.Column("item", sa.String(length=128), primary_key=True, nullable=False),
        sa.Column("who", sa.String(length=66), primary_key=True, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_item_sum_who_who", "item_sum_who", ["day", "who"])
    op.create_table(
        "item_sums",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("kind", sa.String(length=32), primary_key=True, nullable=False),
        sa.Column("item", sa.String(length=128), primary_key=True, nullable=False),
        sa.Column("dim", sa.String(length=16), primary_key=True, nullable=False),
        sa.Column("key", sa.String(length=255), primary_key=True, nullable=False),
        sa.Column("user_id", sa.String(length=64), primary_key=True, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.drop_index("ix_fact_looks_item", table_name="fact_looks")
    op.create_index("ix_fact_looks_item", "fact_looks", ["content_kind", "content_id", "day", "ts"])
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
    parts.append(
        f"SELECT day, 'hour', {_HOUR}, who, COUNT(*) FROM fact_page_views p "
        f"WHERE day IN (SELECT day FROM fact_sum_days) GROUP BY day, {_HOUR}, who"
    )
    op.execute("INSERT INTO fact_sum_who (day, dim, key, who, n) " + " UNION ALL ".join(parts))
    signed_in = "CASE WHEN who LIKE 'u:%' THEN {} ELSE 0 END"
    op.execute(
        "INSERT INTO fact_sums (day, dim, key, n, n_auth, visitors, visitors_auth) "
        f"SELECT day, dim, key, SUM(n), SUM({signed_in.format('n')}), COUNT(*), SUM({signed_in.format('1')}) "
        "FROM fact_sum_who GROUP BY day, dim, key"
    )
    op.execute(
        "INSERT INTO item_sum_who (day, kind, item, who, n) SELECT day, content_kind, content_id, who, COUNT(*) "
        f"FROM fact_looks WHERE {_KEPT} GROUP BY day, content_kind, content_id, who"
    )
    item = "day, content_kind, content_id"
    parts = [f"SELECT {item}, 'looks', '', {_USER}, COUNT(*) FROM fact_looks WHERE {_KEPT} GROUP BY {item}, {_USER}"]
    for dim, column in (("country", "country"), ("device", "device"), ("type", "view_type"), ("referrer", "referrer")):
        parts.append(
            f"SELECT {item}, '{dim}', {column}, {_USER}, COUNT(*) FROM fact_looks WHERE {_KEPT} "
            f"AND {column} IS NOT NULL AND {column} <> '' GROUP BY {item}, {column}, {_USER}"
        )
    parts.append(f"SELECT {item}, 'hour', {_HOUR}, {_USER}, COUNT(*) FROM fact_looks WHERE {_KEPT} "
                 f"GROUP BY {item}, {_HOUR}, {_USER}")  # fmt: skip
    for dim, key in (("impressions", "''"), ("impression_type", "view_type"), ("impression_hour", _HOUR)):
        group = f"{item}, {_USER}" if key == "''" else f"{item}, {key}, {_USER}"
        parts.append(
            f"SELECT {item}, '{dim}', {key}, {_USER}, COUNT(*) FROM fact_impressions WHERE {_KEPT} GROUP BY {group}"
        )
    viewer = "CASE WHEN who LIKE 'u:%' THEN SUBSTR(who, 3) ELSE '' END"
    parts.append(f"SELECT day, kind, item, 'viewers', '', {viewer}, COUNT(*) FROM item_sum_who "
                 f"GROUP BY day, kind, item, {viewer}")  # fmt: skip
    op.execute("INSERT INTO item_sums (day, kind, item, dim, key, user_id, n) " + " UNION ALL ".join(parts))


def downgrade() -> None:
    op.drop_index("ix_fact_looks_item", table_name="fact_looks")
    op.create_index("ix_fact_looks_item", "fact_looks", ["content_kind", "content_id", "day"])
    op.drop_table("item_sums")
    op.drop_index("ix_item_sum_who_who", table_name="item_sum_who")
    op.drop_table("item_sum_who")
    op.drop_table("fact_sums")
    op.drop_index("ix_fact_sum_who_who", table_name="fact_sum_who")
    op.drop_table("fact_sum_who")
    op.drop_table("fact_sum_days")

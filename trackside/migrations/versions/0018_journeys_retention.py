"""Retention of signed-in users and engagement of page views.

- `user_days`: one row per UTC day and signed-in user active that day (any signed-in request),
  written by the rollup; `user_first_seen`: each user's first and last such day; `retention_weeks`:
  per cohort week (of the first day) and active week, the distinct users, recomputed from those two
  by the rollup for the weeks a rolled day can change. The weekly retention grid reads these alone
  (user ids only, never an IP or a visitor id), so it reaches past the facts' retention; all are
  pruned with the daily rows (`TRACKSIDE_DAILY_RETENTION_DAYS`). Backfilled here from the facts
  still kept.
- `fact_page_views.scroll_depth` (0-100) and `visible_ms`: what the web snippet reported of the
  page view (NULL when it reported nothing); `prev_label` and `next_label`: the route labels of the
  page views before and after it in its visit (journeys; NULL: none), filled here for the facts kept.

Revision ID: 0018_journeys_retention
Revises: 0017_funnels
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_journeys_retention"
down_revision = "0017_funnels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_days",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("user_id", sa.String(length=64), primary_key=True, nullable=False),
    )
    op.create_index("ix_user_days_user", "user_days", ["user_id", "day"])
    op.create_table(
        "user_first_seen",
        sa.Column("user_id", sa.String(length=64), primary_key=True, nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
    )
    op.create_index("ix_user_first_seen_first", "user_first_seen", ["first_day"])
    op.create_table(
        "retention_weeks",
        sa.Column("cohort_week", sa.Date(), primary_key=True, nullable=False),
        sa.Column("active_week", sa.Date(), primary_key=True, nullable=False),
        sa.Column("users", sa.BigInteger(), nullable=False),
    )
    op.add_column("fact_page_views", sa.Column("scroll_depth", sa.SmallInteger(), nullable=True))
    op.add_column("fact_page_views", sa.Column("visible_ms", sa.BigInteger(), nullable=True))
    op.add_column("fact_page_views", sa.Column("prev_label", sa.String(length=128), nullable=True))
    op.add_column("fact_page_views", sa.Column("next_label", sa.String(length=128), nullable=True))
    # The facts already kept: each page view's neighbours in its visit (derivation sets them from now on).
    op.execute(
        "UPDATE fact_page_views SET prev_label = n.prev_label, next_label = n.next_label FROM ("
        "SELECT day, id, LAG(label) OVER w AS prev_label, LEAD(label) OVER w AS next_label FROM fact_page_views "
        "WINDOW w AS (PARTITION BY day, visit_id ORDER BY ts, id)) AS n "
        "WHERE fact_page_views.day = n.day AND fact_page_views.id = n.id"
    )
    # The days the facts still hold: every signed-in user of a page view, look, impression or site
    # event (API-only requests are not in facts; the rollup reads them from raw events).
    op.execute(
        "INSERT INTO user_days (day, user_id) "
        "SELECT day, user_id FROM fact_page_views WHERE user_id IS NOT NULL "
        "UNION SELECT day, user_id FROM fact_site_events WHERE user_id IS NOT NULL "
        "UNION SELECT day, user_id FROM fact_looks WHERE user_id IS NOT NULL "
        "UNION SELECT day, user_id FROM fact_impressions WHERE user_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO user_first_seen (user_id, first_day, last_day) "
        "SELECT user_id, MIN(day), MAX(day) FROM user_days GROUP BY user_id"
    )
    postgres = op.get_bind().dialect.name == "postgresql"

    def monday(column: str) -> str:
        if postgres:
            return f"CAST(date_trunc('week', CAST({column} AS timestamp)) AS date)"
        return f"date({column}, '-6 days', 'weekday 1')"

    op.execute(
        "INSERT INTO retention_weeks (cohort_week, active_week, users) "
        f"SELECT {monday('f.first_day')}, {monday('d.day')}, COUNT(DISTINCT d.user_id) "
        "FROM user_days d JOIN user_first_seen f ON f.user_id = d.user_id "
        f"GROUP BY {monday('f.first_day')}, {monday('d.day')}"
    )


def downgrade() -> None:
    with op.batch_alter_table("fact_page_views") as batch:
        batch.drop_column("next_label")
        batch.drop_column("prev_label")
        batch.drop_column("visible_ms")
        batch.drop_column("scroll_depth")
    op.drop_table("retention_weeks")
    op.drop_index("ix_user_first_seen_first", table_name="user_first_seen")
    op.drop_table("user_first_seen")
    op.drop_index("ix_user_days_user", table_name="user_days")
    op.drop_table("user_days")

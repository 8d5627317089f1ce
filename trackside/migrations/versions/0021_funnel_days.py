"""Funnels' encoded days.

`funnel_strings`: every string a funnel day's encoding names (paths, event names, labels, signed-in
users, visit dimensions' values), numbered once for all days. `funnel_days`: each closed day's visits
in columns, one row per part (`trackside.storage.funnel_days`), written by the rollup of the day and
deleted with its facts. Days rolled before this migration have none: a funnel asks SQL for them
until they are rolled again.

Revision ID: 0021_funnel_days
Revises: 0020_journey_days
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_funnel_days"
down_revision = "0020_journey_days"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "funnel_strings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("text", sa.String(length=512), nullable=False, unique=True),
    )
    op.create_table(
        "funnel_days",
        sa.Column("day", sa.Date(), primary_key=True, nullable=False),
        sa.Column("part", sa.String(length=8), primary_key=True, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Arrays of numbers compress poorly and are read whole: stored out of line, uncompressed
        # (no decompression when a funnel reads 30 days of them).
        op.execute("ALTER TABLE funnel_days ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("funnel_days")
    op.drop_table("funnel_strings")

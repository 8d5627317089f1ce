"""Funnels added by moderators (`/_trackside/api/funnels`, the dashboard's form); the settings'
funnels (`TRACKSIDE_FUNNELS`) are not stored.

Revision ID: 0017_funnels
Revises: 0016_item_titles
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_funnels"
down_revision = "0016_item_titles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "funnels",
        sa.Column("name", sa.String(length=64), primary_key=True, nullable=False),
        # The steps as JSON: [{"page": "/"}, {"goal": "upload"}, ...]
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("funnels")

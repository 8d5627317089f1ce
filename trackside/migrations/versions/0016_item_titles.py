"""Item titles: what the dashboard shows for an item (an `X-Trackside-Title` hint, or the title field
of the item's API answer asked at read time), one row per item.

Revision ID: 0016_item_titles
Revises: 0015_derive_queue
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_item_titles"
down_revision = "0015_derive_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_titles",
        sa.Column("content_kind", sa.String(32), primary_key=True),
        sa.Column("content_id", sa.String(128), primary_key=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("item_titles")

"""Index one item's daily breakdowns: an item's stats read its rows, not the whole table.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_daily_content_dims_item", "daily_content_dims", ["content_kind", "content_id", "day"])


def downgrade() -> None:
    op.drop_index("ix_daily_content_dims_item", "daily_content_dims")

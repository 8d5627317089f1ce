"""Today's provisional copy in three parts, so that no read decodes more than it uses: the site's
figures (`provisional_days.payload`), every item's totals without breakdowns (`provisional_days.item_totals`,
for content rankings), and each item whole, breakdowns included, in a row of its own
(`provisional_items`, for one item's stats).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Copies are rebuilt every few minutes: drop the old whole-day ones rather than convert them.
    op.execute("DELETE FROM provisional_days")
    op.add_column("provisional_days", sa.Column("item_totals", sa.LargeBinary(), nullable=True))
    op.create_table(
        "provisional_items",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("content_kind", sa.String(32), primary_key=True),
        sa.Column("content_id", sa.String(128), primary_key=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provisional_items")
    op.execute("DELETE FROM provisional_days")
    with op.batch_alter_table("provisional_days") as batch:
        batch.drop_column("item_totals")

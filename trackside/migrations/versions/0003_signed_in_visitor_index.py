"""Index the signed-in events by visitor: an item's live stats lend users to anonymous requests
from the same visitor's signed-in ones. Partial, so anonymous traffic pays nothing for it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_events_signed_in_visitor",
        "events",
        ["day", "visitor"],
        sqlite_where=sa.text("user_id IS NOT NULL"),
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_signed_in_visitor", "events")

"""Content aliases: the site's numeric id of an item beside its public id (from the upstream's
`X-Trackside-Item-Id` hint), so `/api/post/{numeric id}/stats` finds the item's figures.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "content_aliases",
        sa.Column("content_kind", sa.String(32), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("content_id", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("content_aliases")

"""Goals added by `trackside goals add` or the moderators' goals API (the settings' goals are not stored).

Revision ID: 0012_goals
Revises: 0011_facts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_goals"
down_revision = "0011_facts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "goals",
        sa.Column("name", sa.String(length=64), primary_key=True, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("match", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("goals")

"""Today's provisional figures: recomputed every few minutes off the request path, read by the
stats endpoints instead of deriving today from raw events at read time.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provisional_days",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provisional_days")

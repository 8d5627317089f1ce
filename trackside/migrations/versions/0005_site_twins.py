"""Signed-in twins of the site's daily API calls, errors, signups, uploads and impressions.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TWINS = ("api_calls", "errors", "signups", "uploads", "impressions")


def upgrade() -> None:
    with op.batch_alter_table("daily_site") as batch:
        for name in TWINS:
            batch.add_column(sa.Column(name + "_authenticated", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("daily_site") as batch:
        for name in TWINS:
            batch.drop_column(name + "_authenticated")

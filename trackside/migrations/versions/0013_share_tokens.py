"""Share tokens: read-only tokens that open the dashboard signed in (`/_trackside/#token=...`), with
an expiry; only the SHA-256 of each token's secret is stored.

Revision ID: 0013_share_tokens
Revises: 0012_goals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_share_tokens"
down_revision = "0012_goals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "share_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("share_tokens")

"""Funnels (placeholder: filled in by the funnels change).

Revision ID: 0017_funnels
Revises: 0016_item_titles
"""

from __future__ import annotations

revision = "0017_funnels"
down_revision = "0016_item_titles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

"""Item titles (placeholder: filled in by the dashboard's item-titles change).

Revision ID: 0016_item_titles
Revises: 0015_derive_queue
"""

from __future__ import annotations

revision = "0016_item_titles"
down_revision = "0015_derive_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

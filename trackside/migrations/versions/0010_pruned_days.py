"""Days whose raw events are pruned are never rolled up again: `rollup_days.raw_pruned` marks them,
and `late_unrolled` counts the late events that only added to their additive counts.

Days pruned before this revision are found by their rolled event count: a rolled day holding fewer
raw events than it was rolled from has been pruned (pruning deletes a day's raw events whole).

Revision ID: 0010_pruned_days
Revises: 0009_api_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_pruned_days"
down_revision = "0009_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollup_days") as batch:
        batch.add_column(sa.Column("raw_pruned", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("late_unrolled", sa.BigInteger(), nullable=False, server_default=sa.text("0")))
    op.execute(
        "UPDATE rollup_days SET raw_pruned = true WHERE rolled_at IS NOT NULL AND events > "
        "(SELECT COUNT(*) FROM events WHERE events.day = rollup_days.day)"
    )


def downgrade() -> None:
    with op.batch_alter_table("rollup_days") as batch:
        batch.drop_column("late_unrolled")
        batch.drop_column("raw_pruned")

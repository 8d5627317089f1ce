"""Derivation leaves the ingest transaction: a stored batch marks the visitor-days it touched,
with each one's earliest new event (`earliest`; NULL: derive the whole day) and a `version` that
every new mark of the same visitor-day replaces with a random one (a counter would start again at
0 when a mark is cleared and made anew, and a deriver holding an old read would take the new mark
for the one it read), so the deriver clears only a mark it has seen whole;
`api`: API calls among the new events (the visitor-day's API counts are recounted).

Revision ID: 0015_derive_queue
Revises: 0014_fact_partitions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_derive_queue"
down_revision = "0014_fact_partitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("derive_marks") as batch:
        batch.add_column(sa.Column("earliest", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("api", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("derive_marks") as batch:
        batch.drop_column("api")
        batch.drop_column("version")
        batch.drop_column("earliest")

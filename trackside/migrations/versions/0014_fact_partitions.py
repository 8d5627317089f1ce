"""PostgreSQL: the fact tables partitioned by day (a partition per UTC day, made ahead by the
scheduled prune, and a default partition for any other day), so that retention drops a day's
partition instead of deleting its rows, and a day's reads and rollup touch that day's partition
only. SQLite: nothing to do.

Each table is rebuilt: created partitioned beside the old one, filled from it, swapped in; its
primary key and indexes keep their names (read from the old table).

Revision ID: 0014_fact_partitions
Revises: 0013_share_tokens
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_fact_partitions"
down_revision = "0013_share_tokens"
branch_labels = None
depends_on = None

FACT_TABLES = (
    "fact_page_views",
    "fact_looks",
    "fact_impressions",
    "fact_site_events",
    "fact_visitor_days",
    "fact_visits",
)


def _quote(names: list[str | None] | list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _rebuild(table: str, partitioned: bool) -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    pk = inspector.get_pk_constraint(table)
    indexes = inspector.get_indexes(table)
    old = f"{table}_rebuilt"
    op.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    op.execute(f'ALTER TABLE "{old}" RENAME CONSTRAINT "{pk["name"]}" TO "{old}_pkey"')
    for index in indexes:
        op.execute(f'ALTER INDEX "{index["name"]}" RENAME TO "{index["name"]}_rebuilt"')
    how = " PARTITION BY RANGE (day)" if partitioned else ""
    op.execute(f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS){how}')
    op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{pk["name"]}" PRIMARY KEY ({_quote(pk["constrained_columns"])})')
    for index in indexes:
        op.execute(f'CREATE INDEX "{index["name"]}" ON "{table}" ({_quote(index["column_names"])})')
    if partitioned:
        op.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
    op.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')
    op.execute(f'DROP TABLE "{old}"')


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in FACT_TABLES:
        _rebuild(table, partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in FACT_TABLES:
        _rebuild(table, partitioned=False)

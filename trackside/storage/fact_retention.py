"""Fact retention: fact rows are kept `TRACKSIDE_FACT_RETENTION_DAYS` (90), daily rows forever.

Only days whose raw events are already pruned lose their facts. Such a day is rolled up, clean and
never rolled again (`trackside.rollup.DayPruned`), and a late event for it is only added to its
counts, never derived (`trackside.storage.writes`). Any other day might still be rolled, or rolled
again, and would lose figures. The settings keep facts at least as long as raw events, and `prune`
prunes raw events first, so every day old enough qualifies."""

from __future__ import annotations

from datetime import date

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage import day_sums
from trackside.storage.funnel_days import forget_funnel_days
from trackside.storage.tables import DERIVE_MARKS, FACT_TABLES, ROLLUP_DAYS

_CHUNK = 500


async def prunable_days(conn: AsyncConnection, before: date) -> list[date]:
    """Days before `before` rolled up, clean and with their raw events pruned, their rollup rows
    locked (PostgreSQL): a writer marking one of them dirty waits for this transaction."""
    days = ROLLUP_DAYS.c
    query = (
        select(days.day)
        .where(days.day < before, days.rolled_at.is_not(None), days.dirty.is_(False), days.raw_pruned.is_(True))
        .order_by(days.day)
        .with_for_update()
    )
    return list((await conn.execute(query)).scalars().all())


async def prune_facts(conn: AsyncConnection, before: date) -> int:
    """Delete the fact rows of days before `before` that may lose them (`prunable_days`), and their
    derive marks (a derivation of a pruned day would find nothing to derive). Returns the fact rows
    deleted."""
    pruned = await prunable_days(conn, before)
    removed = 0
    for first in range(0, len(pruned), _CHUNK):
        chunk = pruned[first : first + _CHUNK]
        for table in FACT_TABLES:
            result = await conn.execute(delete(table).where(table.c.day.in_(chunk)))
            removed += max(result.rowcount, 0)
        await conn.execute(delete(DERIVE_MARKS).where(DERIVE_MARKS.c.day.in_(chunk)))
        await forget_funnel_days(conn, chunk)  # a funnel counts facts only
        await day_sums.drop(conn, chunk)
    return removed

"""PostgreSQL's day partitions of the fact tables (migration 0014): made a few days ahead by the
scheduled prune, dropped once their day's facts are pruned. A day without its partition (a late
event, the first day after the upgrade) lands in the table's default partition; a day partition is
never made while the default partition holds rows of that day (PostgreSQL would refuse it).

Making a partition locks its table for a moment: it is done here, in its own short transaction, never
on the ingest path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.storage.tables import FACT_TABLES

logger = logging.getLogger("trackside.partitions")

AHEAD_DAYS = 2
# How long a partition's CREATE or DROP waits for its table's lock, and how often it tries: while it
# waits, PostgreSQL queues every later reader of the table behind it (a funnel, a dashboard read), so
# the wait is kept short and tried again between readers rather than held for seconds.
LOCK_TIMEOUT_MS = 100
LOCK_TRIES = 8
LOCK_PAUSE_SECONDS = 0.5


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


async def _locked_briefly(engine: AsyncEngine, table: str, work: Callable[[AsyncConnection], Awaitable[bool]]) -> bool:
    """`work` in a transaction holding `table` (alone, not its partitions) in ACCESS EXCLUSIVE mode,
    each wait for the lock at most LOCK_TIMEOUT_MS, tried LOCK_TRIES times. Returns `work`'s answer;
    raises the last lock timeout when the table stayed busy."""
    for attempt in range(LOCK_TRIES):
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
                await conn.execute(text(f'LOCK TABLE ONLY "{table}" IN ACCESS EXCLUSIVE MODE'))
                return await work(conn)
        except DBAPIError as exc:
            if "lock timeout" not in str(exc.orig) or attempt == LOCK_TRIES - 1:
                raise
        await asyncio.sleep(LOCK_PAUSE_SECONDS)
    raise AssertionError("unreachable")


async def _partitioned(engine: AsyncEngine) -> bool:
    if engine.dialect.name != "postgresql":
        return False
    async with engine.connect() as conn:
        kind = await conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'fact_page_views'"))
    return kind in ("p", b"p")  # a "char": asyncpg may give it as bytes


async def _existing(engine: AsyncEngine) -> set[str]:
    query = text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(:tables)"
    )
    async with engine.connect() as conn:
        return set((await conn.execute(query, {"tables": [t.name for t in FACT_TABLES]})).scalars())


async def existing_partitions(engine: AsyncEngine) -> set[str]:
    """The fact tables' partitions (day ones and the default ones), by name."""
    return await _existing(engine)


async def make_partitions(engine: AsyncEngine, today: date, ahead: int = AHEAD_DAYS) -> list[str]:
    """Partitions of today and the next `ahead` days, where missing; returns those made."""
    if not await _partitioned(engine):
        return []
    existing = await _existing(engine)
    made: list[str] = []
    for offset in range(ahead + 1):
        day = today + timedelta(days=offset)
        for table in FACT_TABLES:
            name = partition_name(table.name, day)
            if name in existing:
                continue

            async def create(conn: AsyncConnection, table: str = table.name, name: str = name, day: date = day) -> bool:
                # The lock CREATE ... PARTITION OF takes anyway (on the table alone, not its
                # partitions), taken first: it waits for the writes under way to commit, so the
                # look below sees every row of the day that reached the default partition
                # (looked at before the lock, a row committed in between made the CREATE fail).
                # Rows of that day already in the default partition: it stays there.
                stray = await conn.scalar(
                    text(f'SELECT 1 FROM "{table}_default" WHERE day = :day LIMIT 1'), {"day": day}
                )
                if stray:
                    return False
                await conn.execute(
                    text(
                        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{table}" '
                        f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
                    )
                )
                return True

            try:
                if not await _locked_briefly(engine, table.name, create):
                    continue
            except DBAPIError as exc:
                # Busy past the lock timeout (or refused): the day's rows go to the default partition
                # meanwhile; the next prune tries again. Never a reason to fail the rollup.
                logger.warning("fact partition %s not made (%s); trying again later", name, type(exc.orig).__name__)
                continue
            made.append(name)
    if made:
        logger.info("made %d fact partitions", len(made))
    return made


async def drop_empty_partitions(engine: AsyncEngine, before: date) -> list[str]:
    """Day partitions of days before `before` that hold no rows any more (their facts were pruned)."""
    if not await _partitioned(engine):
        return []
    dropped: list[str] = []
    for name in sorted(await _existing(engine)):
        stamp = name.rsplit("_p", 1)[-1]
        if not (len(stamp) == 8 and stamp.isdigit()):
            continue  # the default partition
        day = date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:]))
        if day >= before:
            continue

        async def drop(conn: AsyncConnection, name: str = name) -> bool:
            if await conn.scalar(text(f'SELECT 1 FROM "{name}" LIMIT 1')):
                return False
            await conn.execute(text(f'DROP TABLE "{name}"'))
            return True

        # Dropping a partition locks its table as making one does (the same brief waits).
        table = name.rsplit("_p", 1)[0]
        try:
            if not await _locked_briefly(engine, table, drop):
                continue
        except DBAPIError as exc:
            logger.warning("fact partition %s not dropped (%s); trying again later", name, type(exc.orig).__name__)
            continue
        dropped.append(name)
    return dropped

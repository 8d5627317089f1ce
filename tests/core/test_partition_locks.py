"""Making a day partition while a long read holds its fact table (issue 15: the embedded sidecar's
scheduled prune, run beside a funnel, queued every later reader of the table behind its lock for the
whole 5 s lock timeout): the wait for the lock is brief and tried again, so other readers pass in
between, and the partition is made once the long read is over."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import text

from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.partitions import make_partitions


async def test_readers_pass_while_a_partition_waits_for_its_table(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    await migrate(database_url)
    engine = create_engine(database_url)
    day = date(2031, 9, 10)
    try:
        async with engine.connect() as long_read, engine.connect() as other:
            await long_read.begin()
            await long_read.execute(text("SELECT count(*) FROM fact_page_views"))  # its lock held until the end
            making = asyncio.create_task(make_partitions(engine, day, ahead=0))
            await asyncio.sleep(0.3)  # the partition now waits on the long read
            await other.begin()
            # Queued behind a 5 s wait for the table's lock, this read would time out here.
            await other.execute(text("SET LOCAL lock_timeout = '2s'"))
            for _ in range(3):
                assert (await other.execute(text("SELECT count(*) FROM fact_page_views"))).scalar_one() == 0
                await other.rollback()
                await other.begin()
                await other.execute(text("SET LOCAL lock_timeout = '2s'"))
                await asyncio.sleep(0.4)
            await other.rollback()
            assert not making.done()
            await long_read.rollback()
            made = await asyncio.wait_for(making, 10)
        assert "fact_page_views_p20310910" in made
    finally:
        await engine.dispose()


async def test_prune_analyzes_every_day_once_a_day_and_recent_partitions_always(database_url):
    """The scheduled prune's ANALYZE: the whole fact tables (every day's partition) when it made the next
    days' partitions (once a day), else only today's, yesterday's and the default partitions: a sidecar's
    start no longer analyzes a month of facts beside its readers."""
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    from datetime import timedelta

    from trackside.rollup import prune

    await migrate(database_url)
    engine = create_engine(database_url)
    today = date(2031, 10, 20)
    old = "fact_page_views_p20311010"

    async def analyzed() -> dict[str, int]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT relname, analyze_count FROM pg_stat_user_tables WHERE relname LIKE 'fact_page_views%'")
            )
            return {name: int(n) for name, n in rows}

    try:
        await make_partitions(engine, today - timedelta(days=10), ahead=0)
        await prune(engine, 7, 0, today)  # makes today's partitions: every partition analyzed
        await asyncio.sleep(1.0)  # statistics are reported when the analyzing transaction ends
        first = await analyzed()
        assert first[old] == 1 and first["fact_page_views_p20311020"] == 1
        await prune(engine, 7, 0, today)  # nothing to make: the recent ones only
        await asyncio.sleep(1.0)
        second = await analyzed()
        assert second[old] == 1
        assert second["fact_page_views_p20311020"] == 2 and second["fact_page_views_default"] == 2
    finally:
        await engine.dispose()

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

"""PostgreSQL's fact tables are partitioned by day (migration 0014): the scheduled prune makes the
next days' partitions ahead, facts land in their day's partition (others in the default one),
reads see all of them, and a pruned day's partition is dropped."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from tests.storing import write_batch
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.rollup import prune
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.partitions import drop_empty_partitions, make_partitions
from trackside.storage.tables import FACT_PAGE_VIEWS


def page_view(ts: float, visitor: str) -> Event:
    return Event(id=new_event_id(ts), ts=ts, kind="page_view", nav="document", method="GET", path="/",
                 label="/", status=200, visitor=visitor)  # fmt: skip


async def where_rows_are(engine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT tableoid::regclass::text, count(*) FROM fact_page_views GROUP BY 1"))
        return {name: n for name, n in rows}


async def test_facts_land_in_day_partitions_and_pruned_ones_are_dropped(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        today = datetime.now(UTC).date()
        noon = datetime(today.year, today.month, today.day, 12, tzinfo=UTC).timestamp()
        # Before any partition: the default one takes today's facts, and today's partition is then not made.
        await write_batch(engine, Batch(events=[page_view(noon - 86_400 * 3, "a")]))
        made = await make_partitions(engine, today)
        assert sorted(made) == sorted(
            f"{t}_p{d:%Y%m%d}"
            for t in ("fact_page_views", "fact_looks", "fact_impressions", "fact_site_events", "fact_visitor_days",
                      "fact_visits")
            for d in (today, today + timedelta(days=1), today + timedelta(days=2))
        )  # fmt: skip
        assert await make_partitions(engine, today) == []  # made once
        await write_batch(engine, Batch(events=[page_view(noon, "b"), page_view(noon + 60, "c")]))
        assert await where_rows_are(engine) == {
            "fact_page_views_default": 1,
            f"fact_page_views_p{today:%Y%m%d}": 2,
        }
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(FACT_PAGE_VIEWS))).scalar_one() == 3
        # An emptied old partition is dropped; one with rows, or a recent one, is not.
        old = today - timedelta(days=100)
        async with engine.begin() as conn:
            await conn.execute(text(
                f"CREATE TABLE fact_page_views_p{old:%Y%m%d} PARTITION OF fact_page_views "
                f"FOR VALUES FROM ('{old}') TO ('{old + timedelta(days=1)}')"
            ))  # fmt: skip
        assert await drop_empty_partitions(engine, today - timedelta(days=90)) == [f"fact_page_views_p{old:%Y%m%d}"]
        # The scheduled prune does both, and changes nothing more here.
        result = await prune(engine, 7, 0, today)
        assert result.fact_rows == 0
        assert await where_rows_are(engine) == {
            "fact_page_views_default": 1,
            f"fact_page_views_p{today:%Y%m%d}": 2,
        }
    finally:
        await engine.dispose()


def test_partition_names():
    from trackside.storage.partitions import partition_name

    assert partition_name("fact_visits", date(2026, 12, 4)) == "fact_visits_p20261204"


async def test_a_partition_is_not_made_over_a_row_committed_while_it_was_being_made(database_url):
    """A fact of a day without its partition, inserted (into the default partition) but not yet
    committed when making the partitions starts: making that day's partition waits for it, then
    leaves the day in the default partition instead of failing ("updated partition constraint for
    default partition would be violated"), and makes the other tables' partitions."""
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    await migrate(database_url)
    engine = create_engine(database_url)
    day = date(2031, 5, 6)  # far ahead: no partition of it exists
    try:
        async with engine.connect() as writer:
            await writer.begin()
            await writer.execute(
                text(
                    "INSERT INTO fact_page_views (day, id, ts, hour, visitor, who, visit_id, label, path, device, "
                    "browser, os) VALUES (:day, 'late', :ts, 9, 'v', 'v:v', 'x', '/', '/', 'desktop', 'Firefox', "
                    "'Linux')"
                ),
                {"day": day, "ts": datetime(2031, 5, 6, 9, 0)},
            )
            making = asyncio.create_task(make_partitions(engine, day, ahead=0))
            await asyncio.sleep(1.0)  # it waits on the open insert
            assert not making.done()
            await writer.commit()
            made = await asyncio.wait_for(making, 10)
        assert "fact_page_views_p20310506" not in made
        assert "fact_looks_p20310506" in made
        assert await where_rows_are(engine) == {"fact_page_views_default": 1}
    finally:
        await engine.dispose()


async def test_a_table_busy_past_the_lock_timeout_is_left_for_the_next_prune(database_url, caplog):
    """A long read holding one fact table: its partition is not made (logged, after `LOCK_TRIES`
    tries of `LOCK_TIMEOUT_MS` each, half a second apart), the others are, and nothing fails; the next
    call makes it once the read is over."""
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    await migrate(database_url)
    engine = create_engine(database_url)
    day = date(2031, 7, 8)
    try:
        async with engine.connect() as reader:
            await reader.begin()
            await reader.execute(text("SELECT count(*) FROM fact_visits"))  # holds its lock until the end
            made = await make_partitions(engine, day, ahead=0)
            await reader.rollback()
        assert "fact_visits_p20310708" not in made
        assert "fact_looks_p20310708" in made
        assert any("fact_visits_p20310708 not made" in r.getMessage() for r in caplog.records)
        assert await make_partitions(engine, day, ahead=0) == ["fact_visits_p20310708"]
    finally:
        await engine.dispose()

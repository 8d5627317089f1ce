"""Storage on both backends: a SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from tests.storing import write_batch
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.reads import bot_hits, day_events
from trackside.storage.salts import DatabaseSalts
from trackside.storage.tables import EVENTS

MIDNIGHT = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


def make_event(ts: float, **kw) -> Event:
    values = dict(kind="page_view", nav="document", method="GET", path="/p/a1", label="/p/[post]", status=200,
                  visitor="f" * 32, device="desktop", browser="Firefox", os="Linux", content_kind="artwork",
                  content_id="a1", country="GB", referrer="reddit.com", duration_ms=1.5)
    values.update(kw)
    return Event(id=new_event_id(ts), ts=ts, **values)


async def test_batch_written_once_however_often_it_is_sent(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        events = [make_event(MIDNIGHT - 0.001), make_event(MIDNIGHT), make_event(MIDNIGHT + 3600, user_id="u7")]
        bots = Counter({(date(2026, 3, 1), "Googlebot", "/p/[post]"): 3})
        batch = Batch(events=events, bots=bots)
        for _ in range(3):
            await write_batch(engine, batch)
        # The same events again in another batch: still stored once.
        await write_batch(engine, Batch(events=events))
        async with engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(EVENTS))).scalar_one()
            feb = await day_events(conn, date(2026, 2, 28))
            march = await day_events(conn, date(2026, 3, 1))
            bots_read = await bot_hits(conn, date(2026, 3, 1), date(2026, 3, 1))
        assert total == 3
        # 23:59:59.999 and 00:00:00 UTC land on their own days.
        assert [e.id for e in feb] == [events[0].id]
        assert sorted(e.id for e in march) == sorted([events[1].id, events[2].id])
        # What was written reads back as it was.
        assert feb[0] == events[0]
        assert bots_read == {"Googlebot": 3}
    finally:
        await engine.dispose()


async def test_one_salt_per_day_shared_and_pruned(database_url):
    await migrate(database_url)
    a, b = create_engine(database_url), create_engine(database_url)
    try:
        noon = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
        first, second = DatabaseSalts(a), DatabaseSalts(b)
        await first.refresh(noon)
        await second.refresh(noon)
        today, tomorrow = noon.date(), noon.date() + timedelta(days=1)
        assert first.salt_for(today) == second.salt_for(today) is not None
        assert first.salt_for(tomorrow) == second.salt_for(tomorrow) is not None
        assert first.salt_for(today) != first.salt_for(tomorrow)
        # An hour after the day ends its salt is gone, and with it any way to link its visitors.
        assert await first.prune(datetime(2026, 3, 2, 0, 30, tzinfo=UTC)) == 0
        assert await first.prune(datetime(2026, 3, 2, 1, 0, 1, tzinfo=UTC)) == 1
        await first.refresh(datetime(2026, 3, 2, 1, 0, 2, tzinfo=UTC))
        assert first.salt_for(today) is None
    finally:
        await a.dispose()
        await b.dispose()


async def test_migrate_twice_is_a_no_op(database_url):
    await migrate(database_url)
    await migrate(database_url)

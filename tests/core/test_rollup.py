"""Rollups on both backends: the same figures before and after, reruns and races change nothing,
late events are counted once, unique signed-in users merge, pruning only deletes what is rolled."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from tests.storing import write_batch
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.figures import load_days
from trackside.report import build_report
from trackside.rollup import pending_days, prune, rollup_day, rollup_pending
from trackside.sketch import RELATIVE_ERROR_BOUND
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import DAILY_CONTENT, DAILY_SITE, EVENTS, ROLLUP_DAYS

WINDOW = 1800.0
DAY1 = date(2026, 3, 1)
TODAY = date(2026, 3, 10)


def at(day: date, seconds: float) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + seconds


def ev(
    ts: float,
    *,
    visitor: str = "v1",
    user: str | None = None,
    path: str = "/p/a1",
    kind: str = "page_view",
    nav: str = "document",
    author: str | None = None,
    country: str | None = "GB",
    name: str | None = None,
) -> Event:
    content = ("artwork", path.rsplit("/", 1)[1]) if path.startswith(("/p/", "/api/p/")) else (None, None)
    return Event(
        id=new_event_id(ts),
        ts=ts,
        kind=kind,
        nav=nav,
        method="GET",
        path=path,
        label="/p/[post]" if content[0] else path,
        status=200,
        visitor=visitor,
        device="desktop",
        browser="Firefox",
        os="Linux",
        user_id=user,
        author_id=author,
        content_kind=content[0],
        content_id=content[1],
        country=country,
        event_name=name,
    )


def journey(day: date) -> list[Event]:
    """Two visitors, one signed in, reloads, an API read, the author, a signup, across the day."""
    return [
        ev(at(day, 10)),
        ev(at(day, 20), kind="api_call", nav="api", path="/api/p/a1", user="u7"),
        ev(at(day, 100)),  # reload: same look
        ev(at(day, 3000)),  # a new look, same visitor (outside 30 minutes)
        ev(at(day, 50), visitor="v2", country="BR"),
        ev(at(day, 60), visitor="v3", path="/p/b2", user="u9", author="u9"),  # the author
        ev(at(day, 70), visitor="v3", path="/about"),
        ev(at(day, 80), visitor="v2", kind="api_call", nav="api", path="/api/auth/register", name="signup"),
        ev(at(day, 86399.999), visitor="v4"),  # 23:59:59.999 lands on this day
    ]


async def setup(url: str):
    await migrate(url)
    return create_engine(url)


async def report(engine, first: date, last: date) -> dict:
    return await build_report(engine, first, last, WINDOW)


async def test_rollup_changes_no_figure_and_reruns_change_nothing(database_url):
    engine = await setup(database_url)
    try:
        await write_batch(engine, Batch(events=journey(DAY1) + journey(DAY1 + timedelta(days=1))))
        await write_batch(engine, Batch(events=[ev(at(DAY1 + timedelta(days=2), 0))]))  # 00:00:00 of day 3
        before = await report(engine, DAY1, DAY1 + timedelta(days=2))
        assert before["page_views"] == {"total": 15, "authenticated": 8, "by_label": {"/p/[post]": 13, "/about": 2}}
        assert before["content"]["artwork"] == [
            # Per day: v1's first look (signed in as u7 through its API read), v1's second look 50 minutes
            # later (anonymous: no signed-in request within 30 minutes), v2, v4; plus v4 at 00:00 of day 3.
            # Unique viewers: u7 once across days, and the anonymous visitor-days v1, v2, v4, v1, v2, v4, v4.
            {"id": "a1", "views": 9, "views_authenticated": 2, "unique_viewers": 8, "unique_viewers_authenticated": 1},
        ]
        assert before["signups"] == 2

        assert await pending_days(engine, TODAY) == [DAY1, DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)]
        results = await rollup_pending(engine, WINDOW, TODAY)
        assert [(r.day, r.events, r.skipped) for r in results] == [
            (DAY1, 9, False),
            (DAY1 + timedelta(days=1), 9, False),
            (DAY1 + timedelta(days=2), 1, False),
        ]
        after = await report(engine, DAY1, DAY1 + timedelta(days=2))
        assert after == before
        async with engine.connect() as conn:
            rows1 = (await conn.execute(select(DAILY_SITE).order_by(DAILY_SITE.c.day))).all()
            days = await load_days(conn, DAY1, DAY1, WINDOW)
        assert days[0].rolled is True
        # Rerun (forced) and a rollup of nothing pending: the same rows.
        await rollup_day(engine, DAY1, WINDOW, force=True)
        assert await rollup_pending(engine, WINDOW, TODAY) == []
        async with engine.connect() as conn:
            rows2 = (await conn.execute(select(DAILY_SITE).order_by(DAILY_SITE.c.day))).all()
        assert rows1 == rows2
    finally:
        await engine.dispose()


async def test_two_workers_rolling_one_day_at_once_equal_one(database_url):
    engine = await setup(database_url)
    other = create_engine(database_url)
    try:
        await write_batch(engine, Batch(events=journey(DAY1)))
        expected = await report(engine, DAY1, DAY1)
        results = await asyncio.gather(rollup_day(engine, DAY1, WINDOW), rollup_day(other, DAY1, WINDOW))
        assert sorted(r.skipped for r in results) == [False, True]
        assert await report(engine, DAY1, DAY1) == expected
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(DAILY_SITE))).scalar_one() == 1
            assert (await conn.execute(select(func.count()).select_from(DAILY_CONTENT))).scalar_one() == 1
    finally:
        await engine.dispose()
        await other.dispose()


async def test_late_event_after_rollup_counted_once(database_url):
    engine = await setup(database_url)
    try:
        events = journey(DAY1)
        await write_batch(engine, Batch(events=events[:-1]))
        await rollup_pending(engine, WINDOW, TODAY)
        late = Batch(events=[events[-1]])  # a spool replayed after midnight
        await write_batch(engine, late)
        async with engine.connect() as conn:
            dirty = (await conn.execute(select(ROLLUP_DAYS.c.dirty).where(ROLLUP_DAYS.c.day == DAY1))).scalar_one()
        assert dirty is True
        # Read while dirty: the day is read from raw events, the late one included.
        assert (await report(engine, DAY1, DAY1))["page_views"]["total"] == 7
        assert await pending_days(engine, TODAY) == [DAY1]
        await rollup_pending(engine, WINDOW, TODAY)
        await write_batch(engine, late)  # and replayed again: still once
        await rollup_pending(engine, WINDOW, TODAY)
        assert (await report(engine, DAY1, DAY1))["page_views"]["total"] == 7
        async with engine.connect() as conn:
            row = (await conn.execute(select(DAILY_SITE.c.page_views).where(DAILY_SITE.c.day == DAY1))).scalar_one()
        assert row == 7
    finally:
        await engine.dispose()


async def test_thirty_days_of_signed_in_users_merge_not_sum(database_url):
    engine = await setup(database_url)
    try:
        rng = random.Random(7)
        population = [f"user-{i}" for i in range(600)]
        seen: set[str] = set()
        daily_sum = 0
        for offset in range(30):
            day = DAY1 + timedelta(days=offset)
            users = rng.sample(population, 150)
            seen.update(users)
            daily_sum += len(users)
            await write_batch(
                engine,
                Batch(
                    events=[
                        ev(at(day, 100 + i), visitor=f"x{offset}-{i}", user=u, path="/about")
                        for i, u in enumerate(users)
                    ]
                ),
            )
        last = DAY1 + timedelta(days=29)
        await rollup_pending(engine, WINDOW, last)  # the last day stays raw: a mix of sketches and a set
        result = await report(engine, DAY1, last)
        merged = result["unique_visitors_authenticated"]
        assert daily_sum == 4500
        assert len(seen) == 600
        assert abs(merged - len(seen)) <= RELATIVE_ERROR_BOUND * len(seen)
        assert result["unique_visitors"] == merged  # nobody anonymous
    finally:
        await engine.dispose()


async def test_prune_deletes_only_rolled_days_behind_retention(database_url):
    engine = await setup(database_url)
    try:
        for offset in range(9):
            await write_batch(engine, Batch(events=[ev(at(DAY1 + timedelta(days=offset), 5))]))
        # Nothing rolled up yet: nothing may be pruned, however old.
        assert (await prune(engine, 7, 0, TODAY)).raw_events == 0
        await rollup_day(engine, DAY1, WINDOW)
        await rollup_day(engine, DAY1 + timedelta(days=1), WINDOW)
        await write_batch(engine, Batch(events=[ev(at(DAY1 + timedelta(days=1), 9), visitor="late")]))  # dirty
        result = await prune(engine, 7, 0, TODAY)
        assert result.raw_events == 1  # DAY1 only: day 2 is dirty, the rest not rolled
        async with engine.connect() as conn:
            days = (await conn.execute(select(EVENTS.c.day).distinct().order_by(EVENTS.c.day))).scalars().all()
        assert days[0] == DAY1 + timedelta(days=1)
        # DAY1's figures survive in its daily rows.
        assert (await report(engine, DAY1, DAY1))["page_views"]["total"] == 1
    finally:
        await engine.dispose()

"""Re-deriving a visitor-day from its latest quiet gap gives the same fact rows as deriving it whole:
random journeys stored one small batch at a time (in time order, shuffled, repeated) against one batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sqlalchemy import select

from tests.storing import delete_facts, write_batch
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.storage.engine import create_engine
from trackside.storage.facts import derive_visitor_days, visitor_days_of
from trackside.storage.migrate import migrate
from trackside.storage.tables import EVENTS, FACT_TABLES, ITEM_AUTHORS
from trackside.storage.writes import DEFAULT_DERIVATION

START = datetime(2026, 3, 1, 6, tzinfo=UTC).timestamp()
VISITORS = [f"{i:032x}" for i in range(6)]


def journey(rng: random.Random) -> list[Event]:
    events = []
    t = START
    for _ in range(120):
        # Mostly short steps, sometimes a pause longer than a visit's gap or a look's window.
        t += rng.choice([1, 3, 4, 8, 20, 200, 900, 1799, 1800, 1801, 2500, 5000])
        visitor = rng.choice(VISITORS)
        roll = rng.random()
        item = rng.choice(["a1", "a2", None])
        common = dict(
            method="GET",
            status=200,
            visitor=visitor,
            device="desktop",
            browser="Firefox",
            os="Linux",
            referrer=rng.choice([None, "reddit.com"]),
            user_id=rng.choice([None, None, "u1"]),
        )
        if roll < 0.45:
            nav = rng.choice(["document", "rsc", "rsc", "beacon"])
            ev = Event(
                id=new_event_id(t),
                ts=t,
                kind="page_view",
                nav=nav,
                path=f"/p/{item}" if item else "/",
                label="/p/[post]" if item else "/",
                content_kind="artwork" if item else None,
                content_id=item,
                unverified=nav == "beacon" and rng.random() < 0.5,
                **common,
            )
        elif roll < 0.8:
            ev = Event(
                id=new_event_id(t),
                ts=t,
                kind="api_call",
                nav="api",
                path=f"/api/post/{item}",
                label="/api/post/[id]",
                content_kind="artwork" if item else None,
                content_id=item,
                **{**common, "user_id": rng.choice([None, None, "u1", "u2"])},
            )
        elif roll < 0.9:
            ev = Event(
                id=new_event_id(t),
                ts=t,
                kind="api_call",
                nav="api",
                path="/api/auth/register",
                label="/api/auth/register",
                event_name="signup",
                **common,
            )
        else:
            ev = Event(
                id=new_event_id(t),
                ts=t,
                kind="impression",
                nav="api",
                path="/api/feed",
                label="/api/feed",
                content_kind="artwork",
                content_id=item or "a3",
                **common,
            )
        events.append(ev)
    return [e for e in events if datetime.fromtimestamp(e.ts, UTC).date() == datetime.fromtimestamp(START, UTC).date()]


async def facts(engine) -> list[list[tuple]]:
    async with engine.connect() as conn:
        return [sorted(tuple(r) for r in await conn.execute(select(t))) for t in FACT_TABLES]


async def clear(engine) -> None:
    async with engine.begin() as conn:
        await delete_facts(conn)
        for table in (EVENTS, ITEM_AUTHORS):
            await conn.execute(table.delete())


async def test_incremental_derivation_equals_whole(database_url, tmp_path):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        for seed in range(10):
            rng = random.Random(seed)
            events = journey(rng)
            # Whole: derive every visitor-day from all of its events.
            await clear(engine)
            await write_batch(engine, Batch(events=events))
            async with engine.begin() as conn:
                await derive_visitor_days(conn, list(visitor_days_of(events)), DEFAULT_DERIVATION)
            whole = await facts(engine)
            assert whole[0], "no page views derived"
            # Incremental: small batches in time order, then the same shuffled and repeated.
            for order in ("time", "shuffled"):
                await clear(engine)
                batches = [events[i : i + 3] for i in range(0, len(events), 3)]
                if order == "shuffled":
                    batches = batches + batches[: len(batches) // 2]
                    rng.shuffle(batches)
                for batch in batches:
                    await write_batch(engine, Batch(events=batch))
                assert await facts(engine) == whole, (seed, order)
    finally:
        await engine.dispose()

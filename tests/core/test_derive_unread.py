"""A visitor-day re-derived from a cut with no raw row read from a view window before it (new API calls
of an anonymous visitor, nothing else near them) skips its fact tables (`_DayWork.unread`): the facts
must still equal a whole derivation after every batch, whether such calls come after a long pause,
alone on their day, or late among page views."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from tests.storing import assert_sums_match_facts, delete_facts, write_batch
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.storage import facts as facts_module
from trackside.storage.engine import create_engine
from trackside.storage.facts import derive_visitor_days, visitor_days_of
from trackside.storage.migrate import migrate
from trackside.storage.tables import EVENTS, FACT_TABLES, FACT_VISITOR_DAYS
from trackside.storage.writes import DEFAULT_DERIVATION

T0 = datetime(2026, 3, 1, 6, tzinfo=UTC).timestamp()
A, B = "a" * 32, "b" * 32


def page(visitor: str, ts: float, path: str = "/") -> Event:
    return Event(new_event_id(ts), ts, "page_view", "document", "GET", path, path, 200, visitor,
                 "desktop", "Firefox", "Linux")  # fmt: skip


def api(visitor: str, ts: float) -> Event:
    return Event(new_event_id(ts), ts, "api_call", "api", "GET", "/api/feed", "/api/feed", 200, visitor,
                 "desktop", "Firefox", "Linux")  # fmt: skip


BATCHES = [
    [page(A, T0), page(A, T0 + 60, "/b"), api(B, T0 + 3600)],  # B: API calls alone on its day
    [api(A, T0 + 6 * 3600), api(A, T0 + 6 * 3600 + 5)],  # A: API calls six hours after its page views
    [api(A, T0 + 30), api(B, T0 + 3605)],  # late, among A's page views; B again
    [page(A, T0 + 6 * 3600 + 10, "/c")],  # a page view just after A's API calls
    [api(A, T0 + 6 * 3600 + 20), page(A, T0 + 120, "/d")],
]


async def facts(engine) -> list[list[tuple]]:
    async with engine.connect() as conn:
        return [sorted(tuple(r) for r in await conn.execute(select(t))) for t in FACT_TABLES]


async def clear(engine) -> None:
    async with engine.begin() as conn:
        await delete_facts(conn)
        await conn.execute(EVENTS.delete())


async def test_api_calls_alone_derive_as_the_whole_day(database_url, monkeypatch):
    unread: set[str] = set()
    taken = facts_module._DayWork.unread

    def spy(work: facts_module._DayWork) -> set[str]:
        out = taken(work)
        unread.update(out)
        return out

    monkeypatch.setattr(facts_module._DayWork, "unread", spy)
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        for n in range(1, len(BATCHES) + 1):
            events = [e for batch in BATCHES[:n] for e in batch]
            await clear(engine)
            await write_batch(engine, Batch(events=events))
            async with engine.begin() as conn:
                await derive_visitor_days(conn, list(visitor_days_of(events)), DEFAULT_DERIVATION)
            whole = await facts(engine)
            await clear(engine)
            for batch in BATCHES[:n]:
                await write_batch(engine, Batch(events=batch))
            assert await facts(engine) == whole, n
            await assert_sums_match_facts(engine)
        async with engine.connect() as conn:
            counts = dict((v, (a, s)) for v, a, s in await conn.execute(
                select(FACT_VISITOR_DAYS.c.visitor, FACT_VISITOR_DAYS.c.api_calls,
                       FACT_VISITOR_DAYS.c.api_calls_authenticated)))  # fmt: skip
        assert counts == {A: (4, 0), B: (2, 0)}
        # The path under test was taken: for B alone on its day, and for A six hours on.
        assert {A, B} <= unread
    finally:
        await engine.dispose()

"""Fact rows, written at ingest: after a batch's events are stored, in the same transaction, every
visitor-day the batch touched is re-derived from its raw events and its fact rows replaced.

Correct under concurrency and in any order: on PostgreSQL a transaction-scoped advisory lock per
hashed bucket of the visitor-day (1,024 a day, taken in sorted order, so two writers never wait on
each other in a cycle and the lock table stays small) is taken after the insert and before the
read; under READ COMMITTED the read that follows sees every event committed by a writer that held
the bucket before. SQLite has one writer at a time. Stored and derived in one transaction, so a
crash leaves neither; `derive_marks` holds visitor-days still to derive (events stored before
facts existed, or a derivation that failed), derived by `derive_marked`."""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.derive import Derivation, VisitorDayFacts, authors_of
from trackside.events import ERROR, NAV_API, Event
from trackside.storage.reads import _COLUMNS as EVENT_COLUMNS
from trackside.storage.reads import _events as rows_to_events
from trackside.storage.tables import (
    DERIVE_MARKS,
    EVENTS,
    FACT_IMPRESSIONS,
    FACT_LOOKS,
    FACT_PAGE_VIEWS,
    FACT_SITE_EVENTS,
    FACT_TABLES,
    FACT_VISITOR_DAYS,
    FACT_VISITS,
    ITEM_AUTHORS,
)

logger = logging.getLogger("trackside.facts")

BUCKETS = 1024
_CHUNK = 500
VisitorDay = tuple[date, str]


def _insert(conn: AsyncConnection, table: object) -> object:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)  # type: ignore[arg-type]


def visitor_days_of(events: Iterable[Event]) -> set[VisitorDay]:
    return {(datetime.fromtimestamp(e.ts, UTC).date(), e.visitor) for e in events}


def bucket_key(day: date, visitor: str) -> int:
    """The advisory lock key of a visitor-day's bucket: the day and a hash of the visitor."""
    return day.toordinal() * BUCKETS + zlib.crc32(visitor.encode()) % BUCKETS


async def lock_buckets(conn: AsyncConnection, keys: Iterable[VisitorDay]) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite: the transaction already holds the database's write lock
    locks = sorted({bucket_key(d, v) for d, v in keys})
    if locks:
        await conn.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", [(k,) for k in locks])


async def store_authors(conn: AsyncConnection, events: list[Event]) -> None:
    """The first author named for an item stays (sorted, so two writers take row locks in one order)."""
    authors = authors_of(events)
    if not authors:
        return
    rows = [{"content_kind": k, "content_id": i, "author_id": a} for (k, i), a in sorted(authors.items())]
    stmt = _insert(conn, ITEM_AUTHORS).on_conflict_do_nothing(  # type: ignore[attr-defined]
        index_elements=["content_kind", "content_id"]
    )
    await conn.execute(stmt, rows)


# Anonymous API calls that name no item, no event and no error change no fact but the day's API
# count, which is counted in SQL: on an API-heavy site they are most rows, so they are not read.
def _needed() -> Any:
    c = EVENTS.c
    return or_(
        c.nav != NAV_API,
        c.user_id.is_not(None),
        c.content_id.is_not(None),
        c.event_name.is_not(None),
        c.kind == ERROR,
    )


async def read_visitor_days(
    conn: AsyncConnection, keys: list[VisitorDay]
) -> tuple[dict[VisitorDay, list[Event]], dict[VisitorDay, tuple[int, int]]]:
    """The raw events derivation uses of these visitor-days, and each one's API calls (all, signed in)."""
    by_day: dict[date, list[str]] = defaultdict(list)
    for day, visitor in keys:
        by_day[day].append(visitor)
    out: dict[VisitorDay, list[Event]] = defaultdict(list)
    api: dict[VisitorDay, tuple[int, int]] = {}
    c = EVENTS.c
    for day, visitors in sorted(by_day.items()):
        for first in range(0, len(visitors), _CHUNK):
            chunk = visitors[first : first + _CHUNK]
            for e in rows_to_events(
                await conn.execute(select(*EVENT_COLUMNS).where(c.day == day, c.visitor.in_(chunk), _needed()))
            ):
                out[(day, e.visitor)].append(e)
            # A token-less beacon counts when the proxy saw its visitor near it, by any request:
            # those visitors' every request is read.
            doubtful = sorted({v for v in chunk if any(e.unverified for e in out.get((day, v), ()))})
            if doubtful:
                query = select(*EVENT_COLUMNS).where(c.day == day, c.visitor.in_(doubtful), ~_needed())
                for e in rows_to_events(await conn.execute(query)):
                    out[(day, e.visitor)].append(e)
            counts = (
                select(c.visitor, func.count(), func.count(c.user_id))
                .where(c.day == day, c.visitor.in_(chunk), c.nav == NAV_API)
                .group_by(c.visitor)
            )
            for visitor, n, n_auth in await conn.execute(counts):
                api[(day, visitor)] = (int(n), int(n_auth))
    return out, api


async def derive_visitor_days(conn: AsyncConnection, keys: Iterable[VisitorDay], derivation: Derivation) -> int:
    """Re-derive these visitor-days from their raw events and replace their fact rows. Returns the
    number of raw events read (the cost, reported by the ingest benchmark)."""
    ordered = sorted(set(keys))
    if not ordered:
        return 0
    await lock_buckets(conn, ordered)
    events, api = await read_visitor_days(conn, ordered)
    facts = [
        derivation.visitor_day(day, visitor, events.get((day, visitor), []), api.get((day, visitor), (0, 0)))
        for day, visitor in ordered
    ]
    await _replace(conn, ordered, facts)
    return sum(len(v) for v in events.values())


async def _replace(conn: AsyncConnection, keys: list[VisitorDay], facts: list[VisitorDayFacts]) -> None:
    by_day: dict[date, list[str]] = defaultdict(list)
    for day, visitor in keys:
        by_day[day].append(visitor)
    for table in FACT_TABLES:
        for day, visitors in by_day.items():
            for first in range(0, len(visitors), _CHUNK):
                await conn.execute(
                    delete(table).where(table.c.day == day, table.c.visitor.in_(visitors[first : first + _CHUNK]))
                )
    rows: dict[object, list[dict[str, object]]] = defaultdict(list)
    for f in facts:
        rows[FACT_PAGE_VIEWS] += f.page_views
        rows[FACT_LOOKS] += f.looks
        rows[FACT_IMPRESSIONS] += f.impressions
        rows[FACT_SITE_EVENTS] += f.site_events
        rows[FACT_VISITS] += f.visits
        if f.visitor_day is not None and (f.visitor_day["api_calls"] or f.page_views or f.site_events):
            rows[FACT_VISITOR_DAYS].append(f.visitor_day)
    for table, table_rows in rows.items():
        for first in range(0, len(table_rows), 1000):
            await conn.execute(table.insert(), table_rows[first : first + 1000])  # type: ignore[attr-defined]
    for day, visitors in by_day.items():
        for first in range(0, len(visitors), _CHUNK):
            await conn.execute(
                delete(DERIVE_MARKS).where(
                    DERIVE_MARKS.c.day == day, DERIVE_MARKS.c.visitor.in_(visitors[first : first + _CHUNK])
                )
            )


async def mark(conn: AsyncConnection, keys: Iterable[VisitorDay]) -> None:
    """Leave visitor-days to derive later (sorted: row locks in one order)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [{"day": d, "visitor": v, "marked_at": now} for d, v in sorted(set(keys))]
    if rows:
        stmt = _insert(conn, DERIVE_MARKS).on_conflict_do_nothing(index_elements=["day", "visitor"])  # type: ignore[attr-defined]
        await conn.execute(stmt, rows)


async def marked(conn: AsyncConnection, day: date | None = None, limit: int = 2000) -> list[VisitorDay]:
    query = select(DERIVE_MARKS.c.day, DERIVE_MARKS.c.visitor).order_by(DERIVE_MARKS.c.day, DERIVE_MARKS.c.visitor)
    if day is not None:
        query = query.where(DERIVE_MARKS.c.day == day)
    return [(d, v) for d, v in await conn.execute(query.limit(limit))]


async def derive_marked(engine: AsyncEngine, derivation: Derivation, day: date | None = None) -> int:
    """Derive marked visitor-days (of `day`, or all), a transaction per 2,000; returns how many."""
    done = 0
    while True:
        async with engine.begin() as conn:
            keys = await marked(conn, day)
            if not keys:
                return done
            await derive_visitor_days(conn, keys, derivation)
            done += len(keys)
        logger.info("derived %d marked visitor-days", done)

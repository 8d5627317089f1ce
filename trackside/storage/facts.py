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
from calendar import timegm
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.derive import VISIT_GAP_SECONDS, Derivation, VisitorDayFacts, authors_of
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


def visitor_days_of(events: Iterable[Event]) -> dict[VisitorDay, float]:
    """The visitor-days these events touch, each with its earliest event's time."""
    out: dict[VisitorDay, float] = {}
    for e in events:
        key = (datetime.fromtimestamp(e.ts, UTC).date(), e.visitor)
        known = out.get(key)
        if known is None or e.ts < known:
            out[key] = e.ts
    return out


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


# Signed-in API calls that name no item, no event and no error only lend their user to the same
# visitor's anonymous page views and looks within the view window: they make no fact of their own,
# so a signed-in app polling the API all day never closes the quiet gap a cut needs.
def _lender_only() -> Any:
    c = EVENTS.c
    return and_(
        c.nav == NAV_API,
        c.user_id.is_not(None),
        c.content_id.is_(None),
        c.event_name.is_(None),
        c.kind != ERROR,
    )


def _step() -> Any:
    return and_(_needed(), ~_lender_only())


# How far back the search for a quiet gap looks before a visitor's earliest new event; no gap
# found in it means re-deriving the visitor's whole day (a visitor active without pause for hours).
LOOKBACK_SECONDS = 4 * 3600.0
SLACK = 0.001


def _ts(value: datetime) -> float:
    return timegm(value.timetuple()) + value.microsecond / 1e6


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def _cut(times: list[float], since: float, earliest_new: float, gap: float) -> float | None:
    """Where re-derivation may start: the first event after the latest quiet gap (> `gap`) before
    `earliest_new`, among the visitor's `times` (sorted) of [since, earliest_new). Nothing before
    such a gap can change: every rule of derivation (lent users, looks, echoes, visits) reaches at
    most `gap` across time. None: no gap found, re-derive the whole day."""
    after = earliest_new
    for t in reversed(times):
        if after - t > gap:
            return after
        after = t
    return after if after - since > gap else None


async def derive_visitor_days(
    conn: AsyncConnection, keys: Iterable[VisitorDay] | dict[VisitorDay, float | None], derivation: Derivation
) -> int:
    """Re-derive these visitor-days and replace their fact rows. With each one's earliest new event
    time (a dict), only from the latest quiet gap before it; without (None), the whole day.
    Returns the number of raw rows read (the cost, reported by the ingest benchmark)."""
    earliest: dict[VisitorDay, float | None] = dict(keys) if isinstance(keys, dict) else dict.fromkeys(keys)
    # Stored times keep microseconds (truncated): a new event's time is compared a millisecond early,
    # and so are the cuts below (nothing lies within the quiet gap before a cut anyway).
    earliest = {k: None if t is None else t - SLACK for k, t in earliest.items()}
    ordered = sorted(earliest)
    if not ordered:
        return 0
    await lock_buckets(conn, ordered)
    by_day: dict[date, list[str]] = defaultdict(list)
    for day, visitor in ordered:
        by_day[day].append(visitor)
    gap = max(derivation.window_seconds, VISIT_GAP_SECONDS)
    read = 0
    for day, visitors in sorted(by_day.items()):
        for first in range(0, len(visitors), _CHUNK):
            chunk = visitors[first : first + _CHUNK]
            cuts, n = await _cuts(conn, day, {v: earliest[(day, v)] for v in chunk}, gap)
            read += n
            events, api, n = await _read(conn, day, cuts, derivation.window_seconds)
            read += n
            facts = [derivation.visitor_day(day, v, events.get(v, []), api.get(v, (0, 0))) for v in chunk]
            await _replace(conn, day, cuts, facts)
    return read


async def _cuts(
    conn: AsyncConnection, day: date, earliest: dict[str, float | None], gap: float
) -> tuple[dict[str, float | None], int]:
    c = EVENTS.c
    cuts: dict[str, float | None] = dict.fromkeys(earliest)
    timed = {v: t for v, t in earliest.items() if t is not None}
    if not timed:
        return cuts, 0
    # A visitor-day still marked was never derived: it is derived whole.
    marked_rows = await conn.execute(
        select(DERIVE_MARKS.c.visitor).where(DERIVE_MARKS.c.day == day, DERIVE_MARKS.c.visitor.in_(sorted(timed)))
    )
    for (visitor,) in marked_rows:
        timed.pop(visitor, None)
    if not timed:
        return cuts, 0
    since = {v: t - LOOKBACK_SECONDS for v, t in timed.items()}
    query = (
        select(c.visitor, c.ts)
        .where(
            c.day == day,
            c.visitor.in_(sorted(timed)),
            c.ts >= _dt(min(since.values())),
            c.ts < _dt(max(timed.values())),
            _step(),
        )
        .order_by(c.visitor, c.ts)
    )
    times: dict[str, list[float]] = defaultdict(list)
    n = 0
    for visitor, ts in await conn.execute(query):
        n += 1
        t = _ts(ts)
        if since[visitor] <= t < timed[visitor]:
            times[visitor].append(t)
    for visitor, t0 in timed.items():
        cuts[visitor] = _cut(times.get(visitor, []), since[visitor], t0, gap)
    return cuts, n


async def _read(
    conn: AsyncConnection, day: date, cuts: dict[str, float | None], window: float
) -> tuple[dict[str, list[Event]], dict[str, tuple[int, int]], int]:
    """The raw events derivation uses of these visitors' day from their cut (None: all of it), and
    each one's API calls of the whole day (all, signed in), counted in SQL."""
    c = EVENTS.c
    out: dict[str, list[Event]] = defaultdict(list)
    whole = sorted(v for v, cut in cuts.items() if cut is None)
    tails = {v: cut for v, cut in cuts.items() if cut is not None}
    queries = []
    if whole:
        queries.append(select(*EVENT_COLUMNS).where(c.day == day, c.visitor.in_(whole), _needed()))
    if tails:
        # From a view window before the cut: the users lent across it (nothing else crosses it).
        lowest = _dt(min(tails.values()) - window - SLACK)
        queries.append(
            select(*EVENT_COLUMNS).where(c.day == day, c.visitor.in_(sorted(tails)), c.ts >= lowest, _needed())
        )
    n = 0
    for query in queries:
        for e in rows_to_events(await conn.execute(query)):
            n += 1
            cut = tails.get(e.visitor)
            if cut is None or e.ts >= cut - SLACK:
                out[e.visitor].append(e)
            elif e.ts >= cut - window - SLACK and _lends_only(e):
                out[e.visitor].append(e)
    # A token-less beacon counts when the proxy saw its visitor near it, by any request: those
    # visitors' other requests are read too (from a window before the cut).
    doubtful = sorted(v for v, events in out.items() if any(e.unverified for e in events))
    if doubtful:
        lowest_doubt = min((tails.get(v) or 0.0) for v in doubtful) - window - SLACK
        query = select(*EVENT_COLUMNS).where(c.day == day, c.visitor.in_(doubtful), ~_needed())
        if lowest_doubt > 0:
            query = query.where(c.ts >= _dt(lowest_doubt))
        for e in rows_to_events(await conn.execute(query)):
            n += 1
            out[e.visitor].append(e)
    counts = (
        select(c.visitor, func.count(), func.count(c.user_id))
        .where(c.day == day, c.visitor.in_(sorted(cuts)), c.nav == NAV_API)
        .group_by(c.visitor)
    )
    api = {visitor: (int(a), int(b)) for visitor, a, b in await conn.execute(counts)}
    return out, api, n


def _lends_only(e: Event) -> bool:
    return (
        e.nav == NAV_API and e.user_id is not None and e.content_id is None and e.event_name is None and e.kind != ERROR
    )


# Each fact table's time column: a fact at or after a visitor's cut is replaced.
_TIME = {
    FACT_PAGE_VIEWS: "ts",
    FACT_LOOKS: "ts",
    FACT_IMPRESSIONS: "ts",
    FACT_SITE_EVENTS: "ts",
    FACT_VISITS: "started_at",
}


async def _replace(
    conn: AsyncConnection, day: date, cuts: dict[str, float | None], facts: list[VisitorDayFacts]
) -> None:
    whole = sorted(v for v, cut in cuts.items() if cut is None)
    tails = sorted((v, cut) for v, cut in cuts.items() if cut is not None)
    for table in FACT_TABLES:
        column = _TIME.get(table)
        if whole or column is None:
            everyone = whole if column is not None else sorted(cuts)
            if everyone:
                await conn.execute(delete(table).where(table.c.day == day, table.c.visitor.in_(everyone)))
        if tails and column is not None:
            stmt = delete(table).where(
                table.c.day == day, table.c.visitor == bindparam("v"), table.c[column] >= bindparam("cut")
            )
            await conn.execute(stmt, [{"v": v, "cut": _dt(cut - SLACK)} for v, cut in tails])
    rows: dict[object, list[dict[str, object]]] = defaultdict(list)
    for f in facts:
        rows[FACT_PAGE_VIEWS] += f.page_views
        rows[FACT_LOOKS] += f.looks
        rows[FACT_IMPRESSIONS] += f.impressions
        rows[FACT_SITE_EVENTS] += f.site_events
        rows[FACT_VISITS] += f.visits
        if f.visitor_day is not None and f.visitor_day["api_calls"]:
            rows[FACT_VISITOR_DAYS].append(f.visitor_day)
    for table, table_rows in rows.items():
        for first in range(0, len(table_rows), 1000):
            await conn.execute(table.insert(), table_rows[first : first + 1000])  # type: ignore[attr-defined]
    if whole:
        await conn.execute(delete(DERIVE_MARKS).where(DERIVE_MARKS.c.day == day, DERIVE_MARKS.c.visitor.in_(whole)))


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

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

import asyncio
import logging
import random
import secrets
import zlib
from calendar import timegm
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from operator import itemgetter
from time import gmtime, strftime
from typing import Any

from sqlalchemy import String, any_, delete, func, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.derive import VISIT_GAP_SECONDS, Derivation, VisitorDayFacts, authors_of
from trackside.events import ERROR, NAV_API, Event
from trackside.storage import day_sums, item_sums, visitor_sums
from trackside.storage.engine import writing
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


def visitor_days_of(events: Iterable[Event], api: set[VisitorDay] | None = None) -> dict[VisitorDay, float]:
    """The visitor-days these events touch, each with its earliest event's time; those of the API
    calls among them added to `api` if given (in the same pass: a day is made once an event)."""
    out: dict[VisitorDay, float] = {}
    for e in events:
        key = (datetime.fromtimestamp(e.ts, UTC).date(), e.visitor)
        known = out.get(key)
        if known is None or e.ts < known:
            out[key] = e.ts
        if api is not None and e.nav == NAV_API:
            api.add(key)
    return out


def _among(conn: AsyncConnection, column: Any, values: list[str]) -> Any:
    """`column IN values`; on PostgreSQL as `= ANY(array)`, one parameter: with an `IN` of 500
    parameters and no statistics yet (a young table, autovacuum off), the planner scanned the whole
    day's facts for each chunk; the array keeps the (day, visitor) index in use."""
    if conn.dialect.name == "postgresql":
        return column == any_(literal(values, type_=ARRAY(String)))
    return column.in_(values)


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


# `_needed()` in SQL, for the reads made through the driver (PostgreSQL).
_NEEDED_SQL = (
    f"(nav <> '{NAV_API}' OR user_id IS NOT NULL OR content_id IS NOT NULL OR event_name IS NOT NULL "
    f"OR kind = '{ERROR}')"
)
_EVENTS_SQL = (
    f"SELECT {', '.join(c.name for c in EVENT_COLUMNS)} FROM events WHERE day = $1 AND visitor = ANY($2::varchar[]) "
)


async def _on_driver(conn: AsyncConnection, sql: str, run: Any) -> Any:
    """`run(driver)` on the transaction's asyncpg connection (PostgreSQL): rows read through it come as
    asyncpg records, without SQLAlchemy's rows made of them (no type of these tables has a result processor
    on asyncpg, so the values are the same). Its errors are raised as SQLAlchemy's statements raise them
    (`DBAPIError`s: the worker retries on those when the database is away)."""
    raw = await conn.get_raw_connection()
    try:
        return await run(raw.driver_connection)
    except Exception as exc:
        adapted = raw.dbapi_connection
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            adapted._handle_exception(exc)  # type: ignore[union-attr]  # raises the adapter's DB-API error
        except dbapi_error as translated:
            raise DBAPIError.instance(sql, None, translated, dbapi_error, dialect=conn.dialect) from exc
        raise


async def _fetch(conn: AsyncConnection, sql: str, *args: Any) -> list[Any]:
    result: list[Any] = await _on_driver(conn, sql, lambda driver: driver.fetch(sql, *args))
    return result


async def _read_events(
    conn: AsyncConnection, day: date, visitors: list[str], *, needed: bool, since: datetime | None = None
) -> list[Event]:
    """These visitors' events of `day` (from `since`, if given) that make facts (`needed`) or only lend
    (not `needed`). PostgreSQL reads them through the driver: reading 380,000 raw rows as SQLAlchemy rows,
    then events, was 5 s of a 67 s drain."""
    if conn.dialect.name == "postgresql":
        where = ("AND " if needed else "AND NOT ") + _NEEDED_SQL
        if since is None:
            rows = await _fetch(conn, _EVENTS_SQL + where, day, visitors)
        else:
            rows = await _fetch(conn, _EVENTS_SQL + "AND ts >= $3 " + where, day, visitors, since)
        return rows_to_events(rows)  # type: ignore[arg-type]
    c = EVENTS.c
    query = select(*EVENT_COLUMNS).where(c.day == day, _among(conn, c.visitor, visitors))
    query = query.where(_needed() if needed else ~_needed())
    if since is not None:
        query = query.where(c.ts >= since)
    return rows_to_events(await conn.execute(query))


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


@dataclass(slots=True)
class _DayWork:
    """One day's share of a derivation: each visitor's cut, its facts, whose API counts were recounted."""

    day: date
    cuts: dict[str, float | None]
    facts: list[VisitorDayFacts]
    recounted: set[str]
    rows: dict[str, int]  # raw rows read per visitor

    def unread(self) -> set[str]:
        """The visitors derived from a cut for whom no raw row was read: none of their events from a
        view window before the cut on makes a fact (an anonymous API caller's, say), so they have no
        facts from the cut on, and derive none."""
        return {v for v, cut in self.cuts.items() if cut is not None and not self.rows.get(v)}


async def derive_visitor_days(
    conn: AsyncConnection,
    keys: Iterable[VisitorDay] | dict[VisitorDay, float | None],
    derivation: Derivation,
    api_touched: set[VisitorDay] | None = None,
) -> int:
    """Re-derive these visitor-days and replace their fact rows, on one connection (a rollup's, a
    benchmark's). With each one's earliest new event time (a dict), only from the latest quiet gap
    before it; without (None), the whole day. The visitor-days' API counts are recounted for
    `api_touched` only (None: all of them). Returns the number of raw rows read."""
    earliest: dict[VisitorDay, float | None] = dict(keys) if isinstance(keys, dict) else dict.fromkeys(keys)
    ordered = sorted(earliest)
    if not ordered:
        return 0
    await lock_buckets(conn, ordered)
    # Their marks first, in key order, as the deriver takes them: facts are replaced below, and a
    # deriver holding a mark while it replaces the same facts must not wait on us in a cycle.
    await _lock_marks(conn, ordered)
    # A visitor-day still marked whole (never derived) is derived whole.
    if (await conn.execute(select(DERIVE_MARKS.c.day).limit(1))).first() is not None:
        for key in await _marked_among(conn, ordered):
            earliest[key] = None
    works = await _derive(conn, earliest, derivation, api_touched)
    sums = _SumChanges()
    for work in works:
        await _replace(conn, work.day, work.cuts, work.facts, work.recounted, sums=sums, unread=work.unread())
    await sums.apply(conn)
    return sum(sum(w.rows.values()) for w in works)


async def _derive(
    conn: AsyncConnection,
    earliest: dict[VisitorDay, float | None],
    derivation: Derivation,
    api_touched: set[VisitorDay] | None,
) -> list[_DayWork]:
    """Read and derive (no writes): the fact rows of these visitor-days from their cuts."""
    # Stored times keep microseconds (rounded): a new event's time is compared a millisecond early,
    # and so are the cuts below (nothing lies within the quiet gap before a cut anyway).
    earliest = {k: None if t is None else t - SLACK for k, t in earliest.items()}
    by_day: dict[date, list[str]] = defaultdict(list)
    for day, visitor in sorted(earliest):
        by_day[day].append(visitor)
    gap = max(derivation.window_seconds, VISIT_GAP_SECONDS)
    works: list[_DayWork] = []
    for day, visitors in sorted(by_day.items()):
        for first in range(0, len(visitors), _CHUNK):
            chunk = visitors[first : first + _CHUNK]
            cuts, events, rows = await _load(conn, day, {v: earliest[(day, v)] for v in chunk}, gap, derivation)
            # A visitor-day derived whole (never derived, or no quiet gap) is recounted too.
            recount = [v for v in chunk if api_touched is None or (day, v) in api_touched or cuts[v] is None]
            api = await _api_counts(conn, day, recount)
            facts = [derivation.visitor_day(day, v, events.get(v, []), api.get(v, (0, 0))) for v in chunk]
            works.append(_DayWork(day, cuts, facts, set(recount), rows))
    return works


async def _marked_among(conn: AsyncConnection, keys: list[VisitorDay]) -> list[VisitorDay]:
    out: list[VisitorDay] = []
    by_day: dict[date, list[str]] = defaultdict(list)
    for day, visitor in keys:
        by_day[day].append(visitor)
    for day, visitors in by_day.items():
        for first in range(0, len(visitors), _CHUNK):
            query = select(DERIVE_MARKS.c.visitor).where(
                DERIVE_MARKS.c.day == day, _among(conn, DERIVE_MARKS.c.visitor, visitors[first : first + _CHUNK])
            )
            out += [(day, v) for (v,) in await conn.execute(query)]
    return out


def _is_step(e: Event) -> bool:
    """Of the events derivation needs, one that is more than a lender of its user. Signed-in API
    calls that name no item, no event and no error only lend their user to the same visitor's
    anonymous page views and looks within the view window, and make no fact of their own: a
    signed-in app polling the API all day must not close the quiet gap a cut needs."""
    return e.nav != NAV_API or e.content_id is not None or e.event_name is not None or e.kind == ERROR


async def _load(
    conn: AsyncConnection, day: date, earliest: dict[str, float | None], gap: float, derivation: Derivation
) -> tuple[dict[str, float | None], dict[str, list[Event]], dict[str, int]]:
    """Each visitor's cut (None: the whole day) and the raw events derivation uses from it: one
    read of the lookback window for the visitors with new events, one of the whole day for the rest."""
    window = derivation.window_seconds
    cuts: dict[str, float | None] = dict.fromkeys(earliest)
    out: dict[str, list[Event]] = defaultdict(list)
    n: dict[str, int] = defaultdict(int)
    timed = {v: t for v, t in earliest.items() if t is not None}
    if timed:
        since = {v: t - LOOKBACK_SECONDS for v, t in timed.items()}
        lowest = _dt(min(since.values()) - window)
        seen: dict[str, list[Event]] = defaultdict(list)
        for e in await _read_events(conn, day, sorted(timed), needed=True, since=lowest):
            n[e.visitor] += 1
            seen[e.visitor].append(e)
        for visitor, t0 in timed.items():
            events = sorted(seen.get(visitor, ()), key=lambda e: e.ts)
            steps = [e.ts for e in events if since[visitor] <= e.ts < t0 and _is_step(e)]
            cut = _cut(steps, since[visitor], t0, gap)
            cuts[visitor] = cut
            if cut is not None:
                # From a view window before the cut: the users lent across it (nothing else crosses it).
                out[visitor] = [
                    e for e in events if e.ts >= cut - SLACK or (e.ts >= cut - window - SLACK and not _is_step(e))
                ]
    whole = sorted(v for v, cut in cuts.items() if cut is None)
    if whole:
        for e in await _read_events(conn, day, whole, needed=True):
            n[e.visitor] += 1
            out[e.visitor].append(e)
    # A token-less beacon counts when the proxy saw its visitor near it, by any request: those
    # visitors' other requests are read too (from a window before the cut).
    doubtful = sorted(v for v, events in out.items() if any(e.unverified for e in events))
    if doubtful:
        lowest_ts = min((cuts.get(v) or 0.0) for v in doubtful) - window - SLACK
        since_doubtful = _dt(lowest_ts) if lowest_ts > 0 else None
        for e in await _read_events(conn, day, doubtful, needed=False, since=since_doubtful):
            n[e.visitor] += 1
            out[e.visitor].append(e)
    return cuts, out, n


async def _api_counts(conn: AsyncConnection, day: date, visitors: list[str]) -> dict[str, tuple[int, int]]:
    """Each visitor's API calls of the whole day (all, signed in), counted in SQL."""
    if not visitors:
        return {}
    c = EVENTS.c
    counts = (
        select(c.visitor, func.count(), func.count(c.user_id))
        .where(c.day == day, _among(conn, c.visitor, sorted(visitors)), c.nav == NAV_API)
        .group_by(c.visitor)
    )
    return {visitor: (int(a), int(b)) for visitor, a, b in await conn.execute(counts)}


def _lends_only(e: Event) -> bool:
    return (
        e.nav == NAV_API and e.user_id is not None and e.content_id is None and e.event_name is None and e.kind != ERROR
    )


# The fact tables whose changed rows move the day's sums.
_SUMMED = (FACT_PAGE_VIEWS, FACT_LOOKS, FACT_IMPRESSIONS)

# Each fact table's time column: a fact at or after a visitor's cut is replaced.
_TIME = {
    FACT_PAGE_VIEWS: "ts",
    FACT_LOOKS: "ts",
    FACT_IMPRESSIONS: "ts",
    FACT_SITE_EVENTS: "ts",
    FACT_VISITS: "started_at",
}


def _sqlite_value(value: object) -> object:
    # The text forms SQLAlchemy's SQLite Date and DateTime types write and read back: the rows go
    # through the driver directly (SQLAlchemy's per-row parameter processing was most of the cost).
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


@lru_cache(maxsize=32)
def _insert_sql(table: Any, postgres: bool) -> str:
    """SQLite: one row's INSERT (run for each). PostgreSQL: one INSERT of every row at once, each
    column an array (`unnest`): one statement instead of one execution per row. Text columns go as
    `text[]`, so a value too long for its column is refused, not cut by the cast."""
    columns = _columns(table)
    if not postgres:
        return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    types = []
    for c in columns:
        sql_type = table.c[c].type.compile(dialect=postgresql.dialect())
        types.append("text" if sql_type.startswith("VARCHAR") else sql_type)
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
    return f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"


@dataclass(slots=True)
class _SumChanges:
    """What one transaction's fact replacements move the sums by, per day, applied once at its end:
    every sum row in one order (table, then key), so two transactions never wait on each other in
    a cycle (one user's visitor-days in two transactions' chunks would otherwise)."""

    days: dict[date, tuple[Counter[Any], Counter[Any], Counter[Any]]] = field(default_factory=dict)
    # Per day, the change of each of `day_sums.COUNTED`: [count, signed-in count].
    counted: dict[date, dict[str, list[int]]] = field(default_factory=dict)

    def of(self, day: date) -> tuple[Counter[Any], Counter[Any], Counter[Any]]:
        if day not in self.days:
            self.days[day] = (Counter(), Counter(), Counter())
        return self.days[day]

    def count(self, day: date, dim: str, n: int, n_auth: int) -> None:
        self.of(day)
        moved = self.counted.setdefault(day, {}).setdefault(dim, [0, 0])
        moved[0] += n
        moved[1] += n_auth

    async def apply(self, conn: AsyncConnection) -> None:
        # Anonymous uniques first, one row per visitor-day (`visitor_sums`); signed-in ones by `who`.
        moved: dict[date, tuple[Counter[Any], Counter[Any], Counter[Any]]] = {}
        for day, (pages, _, whos) in sorted(self.days.items()):
            changes = visitor_sums.per_visitor()
            visitor_sums.split_pages(pages, changes)
            visitor_sums.split_items(whos, changes)
            moved[day] = await visitor_sums.move(conn, day, changes)
        for day, (pages, _, _) in sorted(self.days.items()):
            await day_sums.apply(conn, day, pages, moved[day][0], moved[day][1], self.counted.get(day))
        for day, (_, items, whos) in sorted(self.days.items()):
            await item_sums.apply(conn, day, items, whos, moved[day][2])


async def _replace(
    conn: AsyncConnection,
    day: date,
    cuts: dict[str, float | None],
    facts: list[VisitorDayFacts],
    recounted: set[str],
    *,
    clear_marks: bool = True,
    sums: _SumChanges | None = None,
    unread: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Replace these visitor-days' facts of `day` from their cuts (None: whole). The day's sums move
    by the difference: added to `sums` when given (the caller applies them once, at the end of its
    transaction), else applied here."""
    postgres = conn.dialect.name == "postgresql"
    whole = sorted(v for v, cut in cuts.items() if cut is None)
    # Every fact's time is one of its visitor's events' (which `_needed` reads): a visitor with none
    # read from its cut on has no facts there to compare (`_DayWork.unread`), and its fact tables are not read.
    tails = sorted((v, cut) for v, cut in cuts.items() if cut is not None and v not in unread)
    rows: dict[Any, list[dict[str, object]]] = defaultdict(list)
    for f in facts:
        rows[FACT_PAGE_VIEWS] += f.page_views
        rows[FACT_LOOKS] += f.looks
        rows[FACT_IMPRESSIONS] += f.impressions
        rows[FACT_SITE_EVENTS] += f.site_events
        rows[FACT_VISITS] += f.visits
        if f.visitor_day is not None and f.visitor_day["api_calls"] and f.visitor_day["visitor"] in recounted:
            rows[FACT_VISITOR_DAYS].append(f.visitor_day)
    # The day's sums (page views, items) move by what is deleted and inserted here (`day_sums`);
    # asked before writing: a day whose first facts these are starts its sums.
    summing = await day_sums.kept(conn, day)
    # Only what changed is written: the facts from the cut on are read, and a row the derivation made
    # again, equal in every column, stays (a tail re-derived for one new page view rewrites that view,
    # the one before it and the visit, not the whole visit).
    deleted: dict[Any, list[dict[str, Any]]] = {}
    # Each row to insert: the derivation's dict and its values in the table's column order.
    inserted: dict[Any, list[tuple[dict[str, Any], tuple[Any, ...]]]] = {}
    api_calls = [0, 0]  # the change of the day's API calls (all, signed in), for its sums
    for table in FACT_TABLES:
        columns = _columns(table)
        if table is FACT_VISITOR_DAYS:
            if recounted:
                gone_counts = await conn.execute(
                    delete(table)
                    .where(table.c.day == day, _among(conn, table.c.visitor, sorted(recounted)))
                    .returning(table.c.api_calls, table.c.api_calls_authenticated)
                )
                for calls, signed_in in gone_counts:
                    api_calls[0] -= calls
                    api_calls[1] -= signed_in
            values_of = _values_of(table)
            inserted[table] = [(r, values_of(r)) for r in rows[table]]
            for r in rows[table]:
                api_calls[0] += int(r["api_calls"])  # type: ignore[call-overload]
                api_calls[1] += int(r["api_calls_authenticated"])  # type: ignore[call-overload]
            continue
        at_id = columns.index("id")
        current = await _facts_from_cuts(conn, table, day, whole, tails)
        values_of = _values_of(table)
        made = {r["id"]: (r, values_of(r)) for r in rows[table]}
        gone_rows = [old for old in current if (new := made.get(old[at_id])) is None or new[1] != old]
        gone = [old[at_id] for old in gone_rows]
        kept_ids = {old[at_id] for old in current}.difference(gone)
        inserted[table] = [pair for i, pair in made.items() if i not in kept_ids]
        deleted[table] = [dict(zip(columns, old, strict=True)) for old in gone_rows] if table in _SUMMED else []
        if gone and postgres:
            await conn.exec_driver_sql(
                f"DELETE FROM {table.name} WHERE day = $1 AND id = ANY($2::varchar[])", (day, gone)
            )
        elif gone:
            await conn.exec_driver_sql(
                f"DELETE FROM {table.name} WHERE day = ? AND id = ?", [(day.isoformat(), i) for i in gone]
            )
    for table, pairs in inserted.items():
        if not pairs:
            continue
        if postgres:
            await _insert_rows(conn, table, [values for _, values in pairs])
        else:
            params = [tuple(_sqlite_value(v) for v in values) for _, values in pairs]
            await conn.exec_driver_sql(_insert_sql(table, False), params)
    if summing:
        into = _SumChanges() if sums is None else sums
        pages, items, whos = into.of(day)
        new_rows = {table: [r for r, _ in inserted[table]] for table in _SUMMED}
        day_sums.tally(pages, deleted[FACT_PAGE_VIEWS], -1)
        day_sums.tally(pages, new_rows[FACT_PAGE_VIEWS], 1)
        item_sums.tally_looks(items, whos, deleted[FACT_LOOKS], -1)
        item_sums.tally_looks(items, whos, new_rows[FACT_LOOKS], 1)
        item_sums.tally_impressions(items, deleted[FACT_IMPRESSIONS], -1)
        item_sums.tally_impressions(items, new_rows[FACT_IMPRESSIONS], 1)
        into.count(day, day_sums.API_CALLS, *api_calls)
        if sums is None:
            await into.apply(conn)
    if whole and clear_marks:
        await conn.execute(
            delete(DERIVE_MARKS).where(DERIVE_MARKS.c.day == day, _among(conn, DERIVE_MARKS.c.visitor, whole))
        )


async def _facts_from_cuts(
    conn: AsyncConnection, table: Any, day: date, whole: list[str], tails: list[Any]
) -> list[tuple[Any, ...]]:
    """The rows of `table` that a derivation from these cuts makes anew, as tuples in the table's
    column order (`_columns`): every row of `whole`, and each tail's rows from its cut on."""
    t = table.c
    time = _TIME[table]
    columns = _columns(table)
    out: list[tuple[Any, ...]] = []
    if conn.dialect.name == "postgresql":
        # Through the driver (records, not SQLAlchemy rows), as `_events_pg`.
        if whole:
            out += map(
                tuple,
                await _fetch(
                    conn,
                    f"SELECT {', '.join(columns)} FROM {table.name} WHERE day = $1 AND visitor = ANY($2::varchar[])",
                    day,
                    whole,
                ),
            )
        if tails:
            out += map(
                tuple,
                await _fetch(
                    conn,
                    f"SELECT {', '.join('t.' + c for c in columns)} FROM {table.name} AS t "
                    f"JOIN unnest($2::varchar[], $3::timestamp[]) AS c(v, cut) ON t.visitor = c.v "
                    f"AND t.{time} >= c.cut WHERE t.day = $1",
                    day,
                    [v for v, _ in tails],
                    [_dt(cut - SLACK) for _, cut in tails],
                ),
            )
        return out
    if whole:
        query = select(*(t[c] for c in columns)).where(t.day == day, _among(conn, t.visitor, whole))
        out += [tuple(r) for r in await conn.execute(query)]
    if not tails:
        return out
    cut_of = {v: _dt(cut - SLACK) for v, cut in tails}
    at_visitor, at_time = columns.index("visitor"), columns.index(time)
    for first in range(0, len(tails), _CHUNK):
        chunk = [v for v, _ in tails[first : first + _CHUNK]]
        query = select(*(t[c] for c in columns)).where(t.day == day, _among(conn, t.visitor, chunk))
        out += [tuple(r) for r in await conn.execute(query) if r[at_time] >= cut_of[r[at_visitor]]]
    return out


@lru_cache(maxsize=16)
def _columns(table: Any) -> tuple[str, ...]:
    return tuple(c.name for c in table.columns)


@lru_cache(maxsize=16)
def _values_of(table: Any) -> Any:
    """A row dict's values in the table's column order, as a tuple (`itemgetter`: a derivation of 150,000
    events makes half a million rows, and a generator per row was 4 s of a 67 s drain)."""
    columns = _columns(table)
    get = itemgetter(*columns)
    return get if len(columns) > 1 else lambda row: (get(row),)


async def _insert_rows(conn: AsyncConnection, table: Any, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: insert these rows (tuples in `_columns` order) by a binary COPY on the transaction's own
    connection: as `_insert_sql`'s arrays the driver checked every value for being a nested array (a
    Python-level `isinstance` per value, 9 million in a drain of 150,000 events), and the server unnested and
    cast them. A connection not in a transaction yet (no statement run in it) gets the `unnest` INSERT."""
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is not None and hasattr(driver, "copy_records_to_table") and driver.is_in_transaction():
        await _on_driver(
            conn,
            f"COPY {table.name}",
            lambda d: d.copy_records_to_table(table.name, records=rows, columns=_columns(table)),
        )
        return
    arrays = tuple(list(column) for column in zip(*rows, strict=True))
    await conn.exec_driver_sql(_insert_sql(table, True), arrays)


def _new_version() -> int:
    return secrets.randbits(62) + 1


async def mark(conn: AsyncConnection, keys: Iterable[VisitorDay]) -> None:
    """Leave visitor-days to derive whole later (sorted: row locks in one order)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    version = _new_version()
    rows = [{"day": d, "visitor": v, "marked_at": now, "version": version} for d, v in sorted(set(keys))]
    if rows:
        stmt = _insert(conn, DERIVE_MARKS)
        # A visitor-day already queued from some time on is now to be derived whole.
        stmt = stmt.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=["day", "visitor"], set_={"earliest": None, "version": version}
        )
        await conn.execute(stmt, rows)


# Ingest queues the visitor-days a batch touched: each with its earliest new event (kept the least
# over batches; NULL, "derive it whole", stays) and a new random version from every batch. Random,
# not a counter: a counter starts again when a cleared mark is made anew, and a deriver still
# holding a read of the old mark would find "its" version and clear a mark it never derived.
_QUEUE_SQL = {
    True: (
        "INSERT INTO derive_marks (day, visitor, marked_at, earliest, version, api) "
        "VALUES ($1, $2, $3, $4, $6, $5) ON CONFLICT (day, visitor) DO UPDATE SET "
        "earliest = CASE WHEN derive_marks.earliest IS NULL THEN NULL "
        "ELSE LEAST(derive_marks.earliest, EXCLUDED.earliest) END, "
        "version = EXCLUDED.version, api = derive_marks.api OR EXCLUDED.api"
    ),
    False: (
        "INSERT INTO derive_marks (day, visitor, marked_at, earliest, version, api) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, visitor) DO UPDATE SET "
        "earliest = CASE WHEN derive_marks.earliest IS NULL THEN NULL "
        "ELSE MIN(derive_marks.earliest, excluded.earliest) END, "
        "version = excluded.version, api = MAX(derive_marks.api, excluded.api)"
    ),
}


async def queue_visitor_days(conn: AsyncConnection, events: list[Event]) -> None:
    """Queue the visitor-days these (newly stored) events touch for the deriver, in the ingest's
    transaction: stored and queued together, so a crash leaves neither. Sorted: two writers take
    the marks' row locks in one order."""
    api: set[VisitorDay] = set()
    touched = visitor_days_of(events, api)
    if not touched:
        return
    postgres = conn.dialect.name == "postgresql"
    now = datetime.now(UTC).replace(tzinfo=None)
    version = _new_version()
    params: list[tuple[object, ...]] = []
    if postgres:
        for (day, visitor), ts in sorted(touched.items()):
            params.append((day, visitor, now, _dt(ts), (day, visitor) in api, version))
    else:
        # A visitor-day a request: the text forms are made once a batch (`now`) and once a second (`_stamp`).
        marked_at = _sqlite_value(now)
        for (day, visitor), ts in sorted(touched.items()):
            params.append((day.isoformat(), visitor, marked_at, _stamp(ts), version, int((day, visitor) in api)))
    await conn.exec_driver_sql(_QUEUE_SQL[postgres], params)


@lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return strftime("%Y-%m-%d %H:%M:%S", gmtime(second))


def _stamp(ts: float) -> str:
    """`_sqlite_value(_dt(ts))`, its strftime cached per second: microseconds rounded as
    `datetime.fromtimestamp` rounds them (half to even), the rare carry into the next second by `_dt`."""
    second = int(ts)
    micros = round((ts - second) * 1_000_000)
    if second < 0 or micros >= 1_000_000:
        return str(_sqlite_value(_dt(ts)))
    return f"{_second_text(second)}.{micros:06d}"


async def marked(conn: AsyncConnection, day: date | None = None, limit: int = 2000) -> list[VisitorDay]:
    query = select(DERIVE_MARKS.c.day, DERIVE_MARKS.c.visitor).order_by(DERIVE_MARKS.c.day, DERIVE_MARKS.c.visitor)
    if day is not None:
        query = query.where(DERIVE_MARKS.c.day == day)
    return [(d, v) for d, v in await conn.execute(query.limit(limit))]


@dataclass(slots=True)
class Round:
    """What one round of the deriver did."""

    derived: list[VisitorDay] = field(default_factory=list)
    # Marked again by a batch while this round derived them: left for the next round.
    superseded: int = 0
    rows: dict[VisitorDay, int] = field(default_factory=dict)  # raw rows read per visitor-day
    full: bool = False  # the round took as many as it was allowed: more may be waiting


@dataclass(slots=True)
class Prepared:
    """A round read and derived, not written yet (`commit_round` writes it)."""

    versions: dict[VisitorDay, int]  # each mark's version when it was read
    works: list[_DayWork]
    full: bool  # as many as allowed were taken: more may be waiting

    @property
    def rows(self) -> dict[VisitorDay, int]:
        return {(w.day, v): n for w in self.works for v, n in w.rows.items()}


async def derive_round(
    engine: AsyncEngine,
    derivation: Derivation,
    *,
    day: date | None = None,
    limit: int = 500,
    skip: Iterable[VisitorDay] = (),
) -> Round:
    """Derive up to `limit` queued visitor-days (oldest marks first; of `day`, or any; not those
    in `skip`) and clear their marks: `prepare_round`, then `commit_round`."""
    prepared = await prepare_round(engine, derivation, day=day, limit=limit, skip=skip)
    return Round() if prepared is None else await commit_round(engine, prepared)


async def prepare_round(
    engine: AsyncEngine,
    derivation: Derivation,
    *,
    day: date | None = None,
    limit: int = 500,
    skip: Iterable[VisitorDay] = (),
) -> Prepared | None:
    """Take up to `limit` queued visitor-days (oldest marks first; of `day`, or any; not those in
    `skip`), read their events and derive their facts, outside any write lock. None: nothing queued."""
    skipped = set(skip)
    m = DERIVE_MARKS.c
    query = select(m.day, m.visitor, m.earliest, m.version, m.api).order_by(m.marked_at, m.day, m.visitor)
    if day is not None:
        query = query.where(m.day == day)
    async with engine.connect() as conn, conn.begin():
        taken = [r for r in await conn.execute(query.limit(limit + len(skipped))) if (r[0], r[1]) not in skipped]
        taken = taken[:limit]
        if not taken:
            return None
        earliest = {(d, v): None if t is None else _ts(t) for d, v, t, _, _ in taken}
        versions = {(d, v): version for d, v, _, version, _ in taken}
        api = {(d, v) for d, v, _, _, a in taken if a}
        works = await _derive(conn, earliest, derivation, api)
    return Prepared(versions, works, len(taken) == limit)


async def commit_round(engine: AsyncEngine, prepared: Prepared) -> Round:
    """Write a prepared round and clear its marks, in a short writing transaction.

    Each mark is locked and its version compared with the one read before the events were.
    Unchanged: the facts are written and the mark cleared. Changed (a batch stored meanwhile, or
    another deriver rewound it): the facts are written all the same, so a visitor busy in every
    batch still sees its figures move, but the mark stays, rewound to this derivation's cut and
    given a new version, so the next round re-derives at least everything written here, with the
    new events, and no deriver holding an older read can clear it. Gone (another deriver wrote it
    from a later read and cleared it): nothing is written. So ingest never waits for derivation,
    and whatever the interleaving of derivers and batches, the derivation that clears a mark saw
    every event stored before it and covers every fact written before it."""
    out = Round(full=prepared.full)
    versions = prepared.versions
    async with writing(engine) as conn:
        current = await _lock_marks(conn, sorted(versions))
        # A mark gone: another deriver wrote this visitor-day from a later read; leave it.
        present = {k for k in versions if k in current}
        fresh = {k for k in present if current[k] == versions[k]}
        out.superseded = len(versions) - len(fresh)
        behind: list[tuple[VisitorDay, float | None, bool]] = []
        sums = _SumChanges()
        for work in prepared.works:
            keep = {v for v in work.cuts if (work.day, v) in present}
            behind += [
                ((work.day, v), work.cuts[v], v in work.recounted) for v in sorted(keep) if (work.day, v) not in fresh
            ]
            if keep != set(work.cuts):
                work = _DayWork(
                    work.day,
                    {v: c for v, c in work.cuts.items() if v in keep},
                    [f for f, v in zip(work.facts, work.cuts, strict=True) if v in keep],
                    work.recounted & keep,
                    work.rows,
                )
            if work.cuts:
                await _replace(
                    conn, work.day, work.cuts, work.facts, work.recounted, clear_marks=False, sums=sums,
                    unread=work.unread()
                )  # fmt: skip
        await sums.apply(conn)
        await _clear_marks(conn, sorted((k, versions[k]) for k in fresh))
        await _rewind_marks(conn, behind)
    out.derived = sorted(fresh)
    out.rows = prepared.rows
    return out


async def _rewind_marks(conn: AsyncConnection, marks: list[tuple[VisitorDay, float | None, bool]]) -> None:
    """Marks to derive again from (at the latest) the given cut (None: the whole day), each with
    a new version; and to recount the API calls if this derivation wrote them (its count may be
    older than one already written, and the mark may now be a new one that came without API calls)."""
    if not marks:
        return
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(
            "UPDATE derive_marks SET version = $4, api = api OR $5, earliest = CASE WHEN earliest IS NULL "
            "OR $3::timestamp IS NULL THEN NULL ELSE LEAST(earliest, $3::timestamp) END "
            "WHERE day = $1 AND visitor = $2",
            [(d, v, None if cut is None else _dt(cut), _new_version(), api) for (d, v), cut, api in marks],
        )
    else:
        await conn.exec_driver_sql(
            "UPDATE derive_marks SET version = ?, api = MAX(api, ?), earliest = CASE WHEN earliest IS NULL "
            "OR ? IS NULL THEN NULL ELSE MIN(earliest, ?) END WHERE day = ? AND visitor = ?",
            [
                (_new_version(), int(api), stamp, stamp, d.isoformat(), v)
                for (d, v), cut, api in marks
                for stamp in (None if cut is None else _sqlite_value(_dt(cut)),)
            ],
        )


async def _lock_marks(conn: AsyncConnection, keys: list[VisitorDay]) -> dict[VisitorDay, int]:
    """The marks' versions now, their rows locked (in key order) until the transaction ends."""
    out: dict[VisitorDay, int] = {}
    by_day: dict[date, list[str]] = defaultdict(list)
    for day, visitor in keys:
        by_day[day].append(visitor)
    m = DERIVE_MARKS.c
    for day, visitors in sorted(by_day.items()):
        for first in range(0, len(visitors), _CHUNK):
            query = (
                select(m.visitor, m.version)
                .where(m.day == day, _among(conn, m.visitor, visitors[first : first + _CHUNK]))
                .order_by(m.visitor)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            out.update({(day, v): version for v, version in await conn.execute(query)})
    return out


async def _clear_marks(conn: AsyncConnection, marks: list[tuple[VisitorDay, int]]) -> None:
    if not marks:
        return
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(
            "DELETE FROM derive_marks AS m USING unnest($1::date[], $2::varchar[], $3::bigint[]) AS c(d, v, n) "
            "WHERE m.day = c.d AND m.visitor = c.v AND m.version = c.n",
            ([d for (d, _), _ in marks], [v for (_, v), _ in marks], [n for _, n in marks]),
        )
    else:
        await conn.exec_driver_sql(
            "DELETE FROM derive_marks WHERE day = ? AND visitor = ? AND version = ?",
            [(d.isoformat(), v, n) for (d, v), n in marks],
        )


async def derive_marked(
    engine: AsyncEngine, derivation: Derivation, day: date | None = None, *, rounds: int | None = None
) -> int:
    """Derive what is queued (of `day`, or all), 2,000 visitor-days a round, until nothing is
    left (or after `rounds` rounds, if set); returns how many were derived."""
    done = 0
    count = 0
    while rounds is None or count < rounds:
        count += 1
        result = await derive_round(engine, derivation, day=day, limit=2000)
        done += len(result.derived)
        if not result.full and not result.superseded:
            break
        if result.superseded and not result.derived:
            # Another deriver is on the same marks (each round rewinds what the other read): a
            # random pause breaks the lockstep, so that one of them gets a round in alone.
            await asyncio.sleep(random.uniform(0.02, 0.3))
        if done and count % 10 == 0:
            logger.info("derived %d marked visitor-days", done)
    return done

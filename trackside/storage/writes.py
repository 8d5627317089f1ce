"""Writes: idempotent event inserts and bot counters. The only dialect branch for upserts."""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import fields
from datetime import UTC, date, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.batch import Batch, BotKey
from trackside.derive import Derivation
from trackside.events import Event
from trackside.storage.facts import queue_visitor_days, store_authors
from trackside.storage.tables import APPLIED, BOT_HITS, CONTENT_ALIASES, EVENTS, ROLLUP_DAYS

logger = logging.getLogger("trackside.storage")
DEFAULT_DERIVATION = Derivation()


def _insert(conn: AsyncConnection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# The hot write path skips SQLAlchemy's per-row processing: plain tuples, one executemany.
_REST = tuple(f.name for f in fields(Event) if f.name not in ("id", "ts"))
_COLUMNS = ("id", "ts", "day", "hour", *_REST)
_rest_of = operator.attrgetter(*_REST)
# SQLite gets this many events per INSERT (one parameter tuple holds all of them). Python's sqlite3
# releases the GIL around every statement step, and the proxy's event loop takes it back each time:
# one handover per 32 rows instead of per row. 32 rows x 29 columns stays far below SQLite's
# 32,766 parameters.
SQLITE_GROUP = 32


@lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    values = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
    return "INSERT OR IGNORE INTO events ({}) VALUES {}".format(", ".join(_COLUMNS), ", ".join([values] * rows))


_POSTGRES_INSERT = "INSERT INTO events ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING".format(
    ", ".join(_COLUMNS), ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
)


@lru_cache(maxsize=4096)
def _second(second: int) -> tuple[str, str, int]:
    t = time.gmtime(second)
    return time.strftime("%Y-%m-%d %H:%M:%S", t), time.strftime("%Y-%m-%d", t), t.tm_hour


def _sqlite_row(e: Event) -> tuple[Any, ...]:
    # The text forms SQLAlchemy's SQLite DateTime and Date types read back; formatting is cached
    # per second because strftime costs more than the insert itself.
    second = int(e.ts)
    stamp, day, hour = _second(second)
    # Rounded as datetime.fromtimestamp (PostgreSQL's path) rounds, so both backends store one time.
    micros = round((e.ts - second) * 1_000_000)
    if micros >= 1_000_000:
        when = datetime.fromtimestamp(e.ts, UTC).replace(tzinfo=None)
        return (e.id, when.strftime("%Y-%m-%d %H:%M:%S.%f"), when.date().isoformat(), when.hour, *_rest_of(e))
    return (e.id, f"{stamp}.{micros:06d}", day, hour, *_rest_of(e))


def _postgres_row(e: Event) -> tuple[Any, ...]:
    when = datetime.fromtimestamp(e.ts, UTC).replace(tzinfo=None)
    return (e.id, when, when.date(), when.hour, *_rest_of(e))


async def write_batch(engine: AsyncEngine, batch: Batch, derivation: Derivation | None = None) -> int:
    """Store one batch in one transaction. Events are insert-or-ignore on their id; bot counters
    are added only the first time a batch id is seen; the visitor-days the events touch are
    queued for derivation into fact rows (`trackside.storage.facts`). Rerunning a batch changes
    nothing (its visitor-days are queued again, and derive to the same rows)."""
    async with engine.begin() as conn:
        return await write_batch_on(conn, batch, derivation=derivation)


Prepared = tuple[list[tuple[Any, ...]], set[date]]  # the dialect's rows, and the days they touch


def prepare_rows(dialect: str, events: list[Event]) -> Prepared:
    """The parameters of the insert: a row per event for PostgreSQL; for SQLite, one flat tuple per
    group of `SQLITE_GROUP` events (the last group of `events` may be shorter)."""
    # The days from the rows' own (a set of a few strings), not a datetime made again for each event.
    if dialect == "postgresql":
        pg_rows = [_postgres_row(e) for e in events]
        return pg_rows, {row[2] for row in pg_rows}
    rows = [_sqlite_row(e) for e in events]
    days = {date.fromisoformat(day) for day in {row[2] for row in rows}}
    groups = [tuple(chain.from_iterable(rows[i : i + SQLITE_GROUP])) for i in range(0, len(rows), SQLITE_GROUP)]
    return groups, days


async def write_batch_on(
    conn: AsyncConnection, batch: Batch, prepared: Prepared | None = None, derivation: Derivation | None = None
) -> int:
    if batch.events:
        fresh = batch.events
        rows, days = prepared or prepare_rows(conn.dialect.name, batch.events)
        # First the days' rollup rows (and their locks): a day pruned meanwhile is known before
        # its events go in.
        pruned = await mark_dirty(conn, days)
        if pruned:
            late = [e for e in batch.events if datetime.fromtimestamp(e.ts, UTC).date() in pruned]
            await _write_late(conn, late)
            others = [e for e in batch.events if datetime.fromtimestamp(e.ts, UTC).date() not in pruned]
            rows = prepare_rows(conn.dialect.name, others)[0] if others else []
            fresh = others
        if conn.dialect.name == "postgresql" and rows:
            await conn.exec_driver_sql(_POSTGRES_INSERT, rows)
        else:
            by_size: defaultdict[int, list[tuple[Any, ...]]] = defaultdict(list)
            for group in rows:
                by_size[len(group) // len(_COLUMNS)].append(group)
            for size, groups in by_size.items():
                await conn.exec_driver_sql(_sqlite_insert(size), groups)
        if fresh:
            await store_authors(conn, fresh)
            await batch.store_titles(conn)  # item titles the responses hinted (trackside.storage.titles)
            # Derived into facts by the deriver (`trackside.deriver`), a moment later, off this path.
            await queue_visitor_days(conn, fresh)
    if batch.aliases:
        stmt = _insert(conn, CONTENT_ALIASES)
        stmt = stmt.on_conflict_do_update(
            index_elements=["content_kind", "alias"], set_={"content_id": stmt.excluded.content_id}
        )
        aliases = [{"content_kind": k, "alias": a[:64], "content_id": i} for (k, a), i in batch.aliases.items()]
        await conn.execute(stmt, aliases)
    if batch.bots:
        first_time = await conn.execute(
            _insert(conn, APPLIED).on_conflict_do_nothing(index_elements=["id"]),
            [{"id": batch.id, "applied_at": datetime.now(UTC).replace(tzinfo=None)}],
        )
        if first_time.rowcount == 1:
            await add_bot_hits(conn, batch.bots)
    return len(batch.events)


async def add_bot_hits(conn: AsyncConnection, counts: Counter[BotKey]) -> None:
    if not counts:
        return
    stmt = _insert(conn, BOT_HITS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "bot", "label"], set_={"hits": BOT_HITS.c.hits + stmt.excluded.hits}
    )
    rows = [{"day": d, "bot": b, "label": label, "hits": n} for (d, b, label), n in counts.items()]
    await conn.execute(stmt, rows)


async def mark_dirty(conn: AsyncConnection, days: Iterable[date]) -> set[date]:
    """New events for these days: a rolled day must be rolled again (its rows replaced), unless
    its raw events are pruned: those days are returned, and stay as they are.

    An upsert, not an update: it waits for a rollup (or a prune) of the same day that is in
    progress (its row lock), so an event that the rollup did not see always leaves the day dirty,
    and a day pruned meanwhile is seen pruned."""
    ordered = sorted(set(days))
    if not ordered:
        return set()
    stmt = _insert(conn, ROLLUP_DAYS)
    today = datetime.now(UTC).date()
    pruned: set[date] = set()
    recent = [{"day": d, "dirty": True, "events": 0} for d in ordered if d >= today]
    if recent:  # today is never rolled, let alone pruned
        await conn.execute(stmt.on_conflict_do_update(index_elements=["day"], set_={"dirty": True}), recent)
    # Closed days one statement each (RETURNING is not for executemany); a batch rarely has any.
    for day in ordered:
        if day >= today:
            continue
        result = await conn.execute(
            stmt.values(day=day, dirty=True, events=0)
            .on_conflict_do_update(
                index_elements=["day"], set_={"dirty": ROLLUP_DAYS.c.dirty | ~ROLLUP_DAYS.c.raw_pruned}
            )
            .returning(ROLLUP_DAYS.c.raw_pruned)
        )
        if result.scalar_one():
            pruned.add(day)
    return pruned


# Page views of late events are derived among themselves only, with the default view window.
LATE_WINDOW_SECONDS = 30 * 60.0


async def _write_late(conn: AsyncConnection, events: list[Event]) -> None:
    """Events for days whose raw events are pruned: stored (so a rerun of the batch finds them and
    adds nothing), and the ones new to the database added to their day's additive counts."""
    from trackside.aggregate import aggregate_day  # the rare path: imported when taken
    from trackside.storage.daily import add_late
    from trackside.views import derive_day

    rows = [{"id": e.id, "ts": t, "day": t.date(), "hour": t.hour, **dict(zip(_REST, _rest_of(e), strict=True))}
            for e in events for t in (datetime.fromtimestamp(e.ts, UTC).replace(tzinfo=None),)]  # fmt: skip
    stmt = _insert(conn, EVENTS).on_conflict_do_nothing(index_elements=["id"]).returning(EVENTS.c.id)
    new: set[str] = set()
    for row in rows:
        new.update((await conn.execute(stmt.values(row))).scalars().all())
    by_day: defaultdict[date, list[Event]] = defaultdict(list)
    for e in events:
        if e.id in new:
            by_day[datetime.fromtimestamp(e.ts, UTC).date()].append(e)
    for day, late in sorted(by_day.items()):
        await add_late(conn, aggregate_day(day, late, derive_day(late, LATE_WINDOW_SECONDS)), len(late))
        logger.warning("%d late events for %s, whose raw events are pruned: added to its counts, not rolled up",
                       len(late), day)  # fmt: skip


class DatabaseWriter:
    """The embedded mode's writer: batches go straight to the database."""

    def __init__(self, engine: AsyncEngine, derivation: Derivation | None = None) -> None:
        self.engine = engine
        self.derivation = derivation

    async def write(self, batch: Batch) -> int:
        # Rows are made a chunk at a time: a loop shared with other work (the in-process
        # middleware's tests, a caller without the writer thread) is held back less.
        rows: list[tuple[Any, ...]] = []
        days: set[date] = set()
        for first in range(0, len(batch.events), SQLITE_GROUP):
            part = batch.events[first : first + SQLITE_GROUP]
            part_rows, part_days = prepare_rows(self.engine.dialect.name, part)
            rows += part_rows
            days |= part_days
            await asyncio.sleep(0)
        async with self.engine.begin() as conn:
            return await write_batch_on(conn, batch, (rows, days), self.derivation)

"""Reads of raw events, shaped back into `Event`s for the view derivation."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Result, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.events import Event
from trackside.storage.tables import BOT_HITS, CONTENT_ALIASES, EVENTS

# In the order of Event's fields, so a row becomes an Event positionally (a rollup reads millions).
_COLUMNS = [EVENTS.c[f.name] for f in fields(Event)]
_TS = [f.name for f in fields(Event)].index("ts")
_EPOCH_DAY = date(1970, 1, 1).toordinal()


async def day_events(conn: AsyncConnection, day: date) -> list[Event]:
    query = select(*_COLUMNS).where(EVENTS.c.day == day).order_by(EVENTS.c.ts, EVENTS.c.id)
    return _events(await conn.execute(query))


async def item_day_events(conn: AsyncConnection, day: date, kind: str, item: str) -> list[Event]:
    """What one item's looks of a day depend on: its own events, and the signed-in events of the
    visitors who looked at it (they lend a user to those visitors' anonymous requests)."""
    # By time range, not by day: the (content_kind, content_id, ts) index then reads only this day's rows.
    start = datetime(day.year, day.month, day.day)
    own = _events(
        await conn.execute(
            select(*_COLUMNS).where(
                EVENTS.c.content_kind == kind,
                EVENTS.c.content_id == item,
                EVENTS.c.ts >= start,
                EVENTS.c.ts < start + timedelta(days=1),
            )
        )
    )
    visitors = sorted({e.visitor for e in own})
    seen = {e.id for e in own}
    for first in range(0, len(visitors), 500):
        query = select(*_COLUMNS).where(
            EVENTS.c.day == day, EVENTS.c.user_id.is_not(None), EVENTS.c.visitor.in_(visitors[first : first + 500])
        )
        own.extend(e for e in _events(await conn.execute(query)) if e.id not in seen)
    return own


def _events(result: Result[Any]) -> list[Event]:
    out: list[Event] = []
    append = out.append
    for row in result:
        values = list(row)
        ts = values[_TS]
        # timegm(ts.timetuple()) + ts.microsecond / 1e6, the same float, several times faster.
        values[_TS] = (
            (ts.toordinal() - _EPOCH_DAY) * 86400 + ts.hour * 3600 + ts.minute * 60 + ts.second + ts.microsecond / 1e6
        )
        append(Event(*values))
    return out


async def bot_hits(conn: AsyncConnection, since: date, until: date) -> dict[str, int]:
    query = (
        select(BOT_HITS.c.bot, func.sum(BOT_HITS.c.hits))
        .where(BOT_HITS.c.day >= since, BOT_HITS.c.day <= until)
        .group_by(BOT_HITS.c.bot)
    )
    return {bot: int(n) for bot, n in (await conn.execute(query)).all()}


async def bot_hits_by_day(conn: AsyncConnection, since: date, until: date) -> dict[date, int]:
    query = (
        select(BOT_HITS.c.day, func.sum(BOT_HITS.c.hits))
        .where(BOT_HITS.c.day >= since, BOT_HITS.c.day <= until)
        .group_by(BOT_HITS.c.day)
    )
    return {day: int(n) for day, n in (await conn.execute(query)).all()}


async def latest_author(conn: AsyncConnection, kind: str, item: str) -> str | None:
    """The item's author as the upstream last hinted it (`X-Trackside-Author`)."""
    query = (
        select(EVENTS.c.author_id)
        .where(EVENTS.c.content_kind == kind, EVENTS.c.content_id == item, EVENTS.c.author_id.is_not(None))
        .order_by(EVENTS.c.ts.desc())
        .limit(1)
    )
    return (await conn.execute(query)).scalar()


async def recent_page_views(conn: AsyncConnection, since_ts: float) -> list[tuple[str, str]]:
    """(visitor, label) of the page views stored since `since_ts` (Unix seconds)."""
    since = datetime.fromtimestamp(since_ts, UTC).replace(tzinfo=None)
    query = select(EVENTS.c.visitor, EVENTS.c.label).where(EVENTS.c.ts >= since, EVENTS.c.kind == "page_view")
    return [(row.visitor, row.label) for row in await conn.execute(query)]


async def content_alias(conn: AsyncConnection, kind: str, alias: str) -> str | None:
    query = select(CONTENT_ALIASES.c.content_id).where(
        CONTENT_ALIASES.c.content_kind == kind, CONTENT_ALIASES.c.alias == alias
    )
    return (await conn.execute(query)).scalar()

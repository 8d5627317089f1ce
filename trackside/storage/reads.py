"""Reads of raw events, shaped back into `Event`s for the view derivation."""

from __future__ import annotations

from calendar import timegm
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.events import Event
from trackside.storage.tables import BOT_HITS, EVENTS

_COLUMNS = [c for c in EVENTS.c if c.name not in ("day", "hour")]


async def day_events(conn: AsyncConnection, day: date) -> list[Event]:
    result = await conn.execute(select(*_COLUMNS).where(EVENTS.c.day == day))
    out = []
    for row in result.mappings():
        data = dict(row)
        ts = data["ts"]
        data["ts"] = timegm(ts.timetuple()) + ts.microsecond / 1e6
        out.append(Event(**data))
    return out


async def bot_hits(conn: AsyncConnection, since: date, until: date) -> dict[str, int]:
    query = (
        select(BOT_HITS.c.bot, func.sum(BOT_HITS.c.hits))
        .where(BOT_HITS.c.day >= since, BOT_HITS.c.day <= until)
        .group_by(BOT_HITS.c.bot)
    )
    return {bot: int(n) for bot, n in (await conn.execute(query)).all()}

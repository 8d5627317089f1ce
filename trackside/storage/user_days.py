"""Signed-in users' active days (`user_days`) and first days (`user_first_seen`): written by the
rollup of each closed day, read by the weekly retention grid (`trackside.stats.retention`).

User ids only: no IP, no visitor id, nothing else of the request. An anonymous visitor cannot be
followed from one day to the next (its id is salted anew each UTC day), so it has no row here.
A day's rows are replaced whole when it is rolled again, so a rerun leaves the same rows; a
user's first day only moves earlier (a day rolled late), never later."""

from __future__ import annotations

from datetime import date

from sqlalchemy import delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.tables import EVENTS, USER_DAYS, USER_FIRST_SEEN


async def record_user_days(conn: AsyncConnection, day: date) -> None:
    """The day's signed-in users, from its raw events (any signed-in request: a page, an API call,
    a beacon), grouped by the database; then their first and last days."""
    await conn.execute(delete(USER_DAYS).where(USER_DAYS.c.day == day))
    users = select(literal(day, USER_DAYS.c.day.type), EVENTS.c.user_id).where(
        EVENTS.c.day == day, EVENTS.c.user_id.is_not(None)
    )
    await conn.execute(USER_DAYS.insert().from_select(["day", "user_id"], users.distinct()))
    postgres = conn.dialect.name == "postgresql"
    insert = (postgresql.insert if postgres else sqlite.insert)(USER_FIRST_SEEN)
    today = select(USER_DAYS.c.user_id, USER_DAYS.c.day, USER_DAYS.c.day).where(USER_DAYS.c.day == day)
    lower, upper = (func.least, func.greatest) if postgres else (func.min, func.max)
    stmt = insert.from_select(["user_id", "first_day", "last_day"], today).on_conflict_do_update(
        index_elements=["user_id"],
        set_={
            "first_day": lower(USER_FIRST_SEEN.c.first_day, insert.excluded.first_day),
            "last_day": upper(USER_FIRST_SEEN.c.last_day, insert.excluded.last_day),
        },
    )
    await conn.execute(stmt)


async def prune_user_days(conn: AsyncConnection, before: date) -> int:
    """The daily rows' retention: active days before `before`, and the users last seen before it
    (one coming back later starts a new cohort). Returns the rows deleted."""
    days = await conn.execute(delete(USER_DAYS).where(USER_DAYS.c.day < before))
    users = await conn.execute(delete(USER_FIRST_SEEN).where(USER_FIRST_SEEN.c.last_day < before))
    return max(days.rowcount, 0) + max(users.rowcount, 0)

"""Signed-in users' active days (`user_days`), first days (`user_first_seen`) and the weekly
retention grid's cells counted from them (`retention_weeks`): written by the rollup of each closed
day, read by the grid (`trackside.stats.retention`).

User ids only: no IP, no visitor id, nothing else of the request. An anonymous visitor cannot be
followed from one day to the next (its id is salted anew each UTC day), so it has no row here.
A day's rows are replaced whole when it is rolled again, so a rerun leaves the same rows; a
user's first day only moves earlier (a day rolled late), never later."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Date, DateTime, cast, delete, distinct, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.tables import EVENTS, RETENTION_WEEKS, USER_DAYS, USER_FIRST_SEEN


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
    await recount_weeks(conn, day)


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def week_start(conn: AsyncConnection, day: Any) -> Any:
    """The Monday (UTC) of a date column's week, in SQL."""
    if conn.dialect.name == "postgresql":
        return cast(func.date_trunc("week", cast(day, DateTime)), Date)
    return func.date(day, "-6 days", "weekday 1")


async def recount_weeks(conn: AsyncConnection, day: date) -> None:
    """The grid's cells of every week from `day`'s through the newest: rolling a day changes its
    week's actives, and can move users' first day to it (a day rolled late), so their cohort in
    every later week. Most often one week: a few days of `user_days` grouped by the database."""
    newest = (await conn.execute(select(func.max(USER_DAYS.c.day)))).scalar()
    monday = monday_of(day)
    cells = RETENTION_WEEKS.c
    await conn.execute(delete(RETENTION_WEEKS).where(cells.active_week >= monday))
    if newest is None:
        return
    d, f = USER_DAYS.c, USER_FIRST_SEEN.c
    cohort, active = week_start(conn, f.first_day), week_start(conn, d.day)
    counted = (
        select(cohort, active, func.count(distinct(d.user_id)))
        .select_from(USER_DAYS.join(USER_FIRST_SEEN, f.user_id == d.user_id))
        .where(d.day >= monday)
        .group_by(cohort, active)
    )
    await conn.execute(RETENTION_WEEKS.insert().from_select(["cohort_week", "active_week", "users"], counted))


async def prune_user_days(conn: AsyncConnection, before: date) -> int:
    """The daily rows' retention: active days before `before`, and the users last seen before it
    (one coming back later starts a new cohort). Returns the rows deleted."""
    days = await conn.execute(delete(USER_DAYS).where(USER_DAYS.c.day < before))
    users = await conn.execute(delete(USER_FIRST_SEEN).where(USER_FIRST_SEEN.c.last_day < before))
    # The weeks that ended before it (a week pruned in part keeps its cells as they were counted).
    weeks = await conn.execute(
        delete(RETENTION_WEEKS).where(RETENTION_WEEKS.c.active_week < before - timedelta(days=6))
    )
    return max(days.rowcount, 0) + max(users.rowcount, 0) + max(weeks.rowcount, 0)

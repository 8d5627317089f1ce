"""Daily rows: write a rolled-up day (replacing what was there), read rolled days back, track
each day's rollup state, and prune raw events behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Select, bindparam, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.aggregate import SiteDay
from trackside.sketch import sketch_of
from trackside.storage.tables import (
    BOT_HITS,
    DAILY_CONTENT,
    DAILY_CONTENT_DIMS,
    DAILY_SITE,
    DAILY_SITE_DIMS,
    EVENTS,
    ROLLUP_DAYS,
)

if TYPE_CHECKING:
    from trackside.figures import DayFigures

_DAILY = (DAILY_SITE, DAILY_SITE_DIMS, DAILY_CONTENT, DAILY_CONTENT_DIMS)
# The site's additive counts: a column each, named as in `DayFigures.counts`.
_SITE_COUNTS = tuple(
    c.name
    for c in DAILY_SITE.columns
    if c.name not in ("day", "unique_visitors", "unique_visitors_authenticated", "users_sketch")
)


def _insert(conn: AsyncConnection, table: object) -> object:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)  # type: ignore[arg-type]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def lock_day(conn: AsyncConnection, day: date) -> tuple[bool, datetime | None, bool]:
    """Take the day's rollup lock for this transaction; return (dirty, rolled_at, raw_pruned) as it stands.

    The first statement of a rollup writes the day's row: on PostgreSQL that row lock makes a
    second worker rolling the same day wait; on SQLite the write takes the database's write lock."""
    stmt = _insert(conn, ROLLUP_DAYS)
    stmt = stmt.values(day=day, dirty=True, events=0).on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=["day"], set_={"day": day}
    )
    await conn.execute(stmt)
    row = (
        await conn.execute(
            select(ROLLUP_DAYS.c.dirty, ROLLUP_DAYS.c.rolled_at, ROLLUP_DAYS.c.raw_pruned).where(
                ROLLUP_DAYS.c.day == day
            )
        )
    ).one()
    return bool(row.dirty), row.rolled_at, bool(row.raw_pruned)


async def clear_dirty(conn: AsyncConnection, day: date) -> None:
    await conn.execute(update(ROLLUP_DAYS).where(ROLLUP_DAYS.c.day == day).values(dirty=False))


async def replace_day(conn: AsyncConnection, figures: DayFigures, events: int) -> None:
    """Replace the day's daily rows with `figures` (and its items, if it has any) and mark it rolled.
    Sketches of signed-in users: `users_sketch` when set, else made from the exact `users`."""
    day = figures.day
    for table in _DAILY:
        await conn.execute(delete(table).where(table.c.day == day))
    site = {name: figures.counts[name] for name in _SITE_COUNTS}
    await conn.execute(
        DAILY_SITE.insert(),
        [
            {
                "day": day,
                **site,
                "unique_visitors": figures.unique_visitors,
                "unique_visitors_authenticated": figures.unique_visitors_authenticated,
                "users_sketch": figures.users_sketch if figures.users is None else sketch_of(figures.users),
            }
        ],
    )
    dims = [
        {"day": day, "dim": dim, "key": key, "count": n, "count_authenticated": n_auth,
         "visitors": who, "visitors_authenticated": who_auth}
        for (dim, key), (n, n_auth, who, who_auth) in figures.dims.items()
    ]  # fmt: skip
    if dims:
        await conn.execute(DAILY_SITE_DIMS.insert(), dims)
    items = []
    item_dims = []
    for (kind, item_id), item in figures.items.items():
        items.append(
            {
                "day": day,
                "content_kind": kind,
                "content_id": item_id,
                **{name: item.counts[name] for name in _ITEM_COUNTS},
                "unique_viewers": item.viewers,
                "unique_viewers_authenticated": item.viewers_authenticated,
                "first_at": item.first_at,
                "last_at": item.last_at,
                "users_sketch": item.users_sketch if item.users is None else sketch_of(item.users),
            }
        )
        for (dim, key), (count, count_auth) in item.dims.items():
            item_dims.append(
                {
                    "day": day,
                    "content_kind": kind,
                    "content_id": item_id,
                    "dim": dim,
                    "key": key[:255],
                    "count": count,
                    "count_authenticated": count_auth,
                }
            )
    for start in range(0, len(items), 1000):
        await conn.execute(DAILY_CONTENT.insert(), items[start : start + 1000])
    for start in range(0, len(item_dims), 1000):
        await conn.execute(DAILY_CONTENT_DIMS.insert(), item_dims[start : start + 1000])
    await conn.execute(
        update(ROLLUP_DAYS).where(ROLLUP_DAYS.c.day == day).values(dirty=False, rolled_at=_now(), events=events)
    )


_ITEM_COUNTS = ("views", "views_authenticated", "impressions", "impressions_authenticated")
_ITEM_COLUMNS = ("content_kind", "content_id", *_ITEM_COUNTS[:2], "unique_viewers", "unique_viewers_authenticated",
                 *_ITEM_COUNTS[2:], "first_at", "last_at")  # fmt: skip


async def insert_items(
    conn: AsyncConnection,
    day: date,
    totals: Select,
    dims: Select,
    sketches: AsyncIterator[tuple[tuple[str, str], bytes]],
) -> None:
    """A day's items' rows, computed by the database: `totals` and `dims` (per item, the columns of
    `daily_content` and `daily_content_dims` in order, without the day) are inserted by it,
    never read here; then each item's sketch of signed-in viewers, as `sketches` yields them."""
    t = totals.subquery()
    await conn.execute(
        DAILY_CONTENT.insert().from_select(
            ["day", *_ITEM_COLUMNS], select(literal(day, DAILY_CONTENT.c.day.type), *t.c)
        )
    )
    d = dims.subquery()
    await conn.execute(
        DAILY_CONTENT_DIMS.insert().from_select(
            ["day", "content_kind", "content_id", "dim", "key", "count", "count_authenticated"],
            select(literal(day, DAILY_CONTENT_DIMS.c.day.type), *d.c),
        )
    )
    c = DAILY_CONTENT.c
    stmt = (
        update(DAILY_CONTENT)
        .where(c.day == day, c.content_kind == bindparam("kind"), c.content_id == bindparam("item"))
        .values(users_sketch=bindparam("sketch"))
    )
    part: list[dict[str, object]] = []
    async for (kind, item_id), sketch in sketches:
        part.append({"kind": kind, "item": item_id, "sketch": sketch})
        if len(part) == 1000:
            await conn.execute(stmt, part)
            part = []
    if part:
        await conn.execute(stmt, part)


async def days_needing_rollup(conn: AsyncConnection, before: date) -> list[date]:
    """Closed days (before `before`) that have raw events and were never rolled, or are dirty."""
    raw_days = select(EVENTS.c.day).where(EVENTS.c.day < before).distinct()
    clean = select(ROLLUP_DAYS.c.day).where(ROLLUP_DAYS.c.dirty.is_(False), ROLLUP_DAYS.c.rolled_at.is_not(None))
    rows = (await conn.execute(raw_days.where(EVENTS.c.day.not_in(clean)))).scalars().all()
    dirty = (
        (
            await conn.execute(
                select(ROLLUP_DAYS.c.day).where(
                    ROLLUP_DAYS.c.day < before, ROLLUP_DAYS.c.dirty.is_(True), ROLLUP_DAYS.c.rolled_at.is_not(None)
                )
            )
        )
        .scalars()
        .all()
    )
    return sorted(set(rows) | set(dirty))


async def rolled_days(conn: AsyncConnection, first: date, last: date) -> set[date]:
    """Days in [first, last] whose daily rows are complete: rolled and clean."""
    rows = await conn.execute(
        select(ROLLUP_DAYS.c.day).where(
            ROLLUP_DAYS.c.day >= first,
            ROLLUP_DAYS.c.day <= last,
            ROLLUP_DAYS.c.dirty.is_(False),
            ROLLUP_DAYS.c.rolled_at.is_not(None),
        )
    )
    return set(rows.scalars().all())


async def day_bot_hits(conn: AsyncConnection, day: date) -> int:
    total = (await conn.execute(select(func.sum(BOT_HITS.c.hits)).where(BOT_HITS.c.day == day))).scalar()
    return int(total or 0)


async def prune_raw(conn: AsyncConnection, before: date) -> int:
    """Delete raw events of days before `before` that are rolled up and clean: never anything else.

    The days are marked `raw_pruned` first, which takes their rows' locks: a write of a late event
    for one of them either came first (the day is dirty, so it is not pruned now) or waits and then
    sees it pruned (and only adds to its counts: `add_late`). Such a day is never rolled again."""
    marked = await conn.execute(
        update(ROLLUP_DAYS)
        .where(ROLLUP_DAYS.c.dirty.is_(False), ROLLUP_DAYS.c.rolled_at.is_not(None), ROLLUP_DAYS.c.day < before)
        .values(raw_pruned=True)
        .returning(ROLLUP_DAYS.c.day)
    )
    days = list(marked.scalars().all())
    removed = 0
    for start in range(0, len(days), 500):
        result = await conn.execute(delete(EVENTS).where(EVENTS.c.day.in_(days[start : start + 500])))
        removed += max(result.rowcount, 0)
    return removed


# What a late event may add to a pruned day's rows: counts that are sums. Never uniques (visitors,
# viewers: whether this visitor was already counted is unknowable without the raw events), and
# never looks (a look depends on the visitor's other requests within the view window).
_LATE_SITE = (
    "page_views", "page_views_authenticated", "api_calls", "api_calls_authenticated", "errors",
    "errors_authenticated", "signups", "signups_authenticated", "uploads", "uploads_authenticated",
)  # fmt: skip
_LOOK_DIMS = ("view_type", "view_device")


async def add_late(conn: AsyncConnection, site: SiteDay, events: int) -> None:
    """Late events of a day whose raw events are pruned (`site`: what they add up to alone): added
    to the additive counts of its daily rows (if they are still kept), and counted as unrolled."""
    day = site.day
    await conn.execute(
        update(DAILY_SITE)
        .where(DAILY_SITE.c.day == day)
        .values({name: DAILY_SITE.c[name] + getattr(site, name) for name in _LATE_SITE})
    )
    kept = (await conn.execute(select(DAILY_SITE.c.day).where(DAILY_SITE.c.day == day))).first() is not None
    dims = [
        {"day": day, "dim": dim, "key": key, "count": d.count, "count_authenticated": d.count_authenticated,
         "visitors": 0, "visitors_authenticated": 0}
        for (dim, key), d in site.dims.items()
        if dim not in _LOOK_DIMS and d.count
    ]  # fmt: skip
    if dims and kept:
        stmt = _insert(conn, DAILY_SITE_DIMS)
        await conn.execute(
            stmt.on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=["day", "dim", "key"],
                set_={
                    "count": DAILY_SITE_DIMS.c.count + stmt.excluded.count,  # type: ignore[attr-defined]
                    "count_authenticated": DAILY_SITE_DIMS.c.count_authenticated + stmt.excluded.count_authenticated,  # type: ignore[attr-defined]
                },
            ),
            dims,
        )
    await conn.execute(
        update(ROLLUP_DAYS)
        .where(ROLLUP_DAYS.c.day == day)
        .values(events=ROLLUP_DAYS.c.events + events, late_unrolled=ROLLUP_DAYS.c.late_unrolled + events)
    )


async def late_unrolled(conn: AsyncConnection, first: date, last: date) -> int:
    """Late events of pruned days in [first, last] that were added to counts, not rolled up."""
    total = (
        await conn.execute(
            select(func.sum(ROLLUP_DAYS.c.late_unrolled)).where(ROLLUP_DAYS.c.day >= first, ROLLUP_DAYS.c.day <= last)
        )
    ).scalar()
    return int(total or 0)


async def prune_daily(conn: AsyncConnection, before: date) -> int:
    removed = 0
    for table in (*_DAILY, BOT_HITS):
        result = await conn.execute(delete(table).where(table.c.day < before))
        removed += max(result.rowcount, 0)
    return removed


async def read_site_day(conn: AsyncConnection, day: date) -> dict[str, object] | None:
    row = (await conn.execute(select(DAILY_SITE).where(DAILY_SITE.c.day == day))).mappings().first()
    return dict(row) if row else None

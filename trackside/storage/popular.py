"""The most viewed items of one content kind over a range of days (v1 `popular`), ranked by the database.

A month of a busy site is tens of thousands of items and a hundred thousand daily rows: summing them in
Python took most of a cold dashboard's wait. Here one statement sums each item's views, impressions and
anonymous viewers over the range and keeps the items that can make the list; only those few are read
back, and only their signed-in viewers are merged. The figures are the ones `trackside.stats.query`'s
`popular_items` makes of the days' figures (tested against it):

- a rolled and clean day counts through its daily rows (`daily_content`);
- another day (today, a day not rolled up yet) through the item sums derivation keeps
  (`trackside.storage.item_sums`) when it has them, else through its fact rows (the author's own looks
  and impressions left out either way);
- the list is ordered by views, then unique viewers, then id; the items that can make it are those
  with at least the views of the `limit`-th (SQL `rank()`), so ties on views are ordered by viewers;
- unique viewers: signed-in viewers merged (exact sets of the other days, sketches of the rolled ones),
  plus anonymous viewers as visitor-days (their id changes every day), summed per day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, case, cast, distinct, exists, func, literal_column, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from trackside.figures import merge_users, rolled_item_sketches
from trackside.storage.daily import rolled_days
from trackside.storage.tables import DAILY_CONTENT, FACT_IMPRESSIONS, FACT_LOOKS, FACT_SUM_DAYS, ITEM_AUTHORS, ITEM_SUMS

FIELDS = ("id", "views", "unique_viewers", "impressions")


def _total(column: Any) -> ColumnElement[Any]:
    """A sum as a 64-bit integer: PostgreSQL's sum of bigints is a numeric, slower to add up again and
    larger in the hash tables of the groups (a month of items spilled to disk at the default work_mem)."""
    return cast(func.sum(column), BigInteger)


def _not_author(kind: Any, item: Any, user: Any) -> ColumnElement[Any]:
    """Not the item's author's own (a NULL or "" user is never an author)."""
    a = ITEM_AUTHORS.c
    return ~exists().where(a.content_kind == kind, a.content_id == item, a.author_id == user)


def _rolled(kind: str, days: list[date]) -> Select:
    c = DAILY_CONTENT.c
    return (
        select(
            c.content_id.label("item"),
            _total(c.views).label("views"),
            _total(c.impressions).label("impressions"),
            _total(c.unique_viewers - c.unique_viewers_authenticated).label("anonymous"),
        )
        .where(c.content_kind == kind, c.day.in_(days))
        .group_by(c.content_id)
    )


def _summed(kind: str, days: list[date]) -> Select:
    """Days whose item sums are kept: one row per item, user and count (anonymous viewers are the
    "viewers" rows of user "")."""
    s = ITEM_SUMS.c

    def total(dim: str, *, anonymous: bool = False) -> ColumnElement[Any]:
        when = and_(s.dim == dim, s.user_id == "") if anonymous else s.dim == dim
        return _total(case((when, s.n), else_=0))

    return (
        select(
            s.item.label("item"),
            total("looks").label("views"),
            total("impressions").label("impressions"),
            total("viewers", anonymous=True).label("anonymous"),
        )
        .where(
            s.day.in_(days),
            s.kind == kind,
            s.dim.in_(("looks", "impressions", "viewers")),
            _not_author(s.kind, s.item, s.user_id),
        )
        .group_by(s.item)
    )


def _from_facts(kind: str, days: list[date]) -> Select:
    """Days read from their facts: anonymous viewers are distinct `who`s less the signed-in ones, per day
    (as `fact_reads.item_totals` counts them)."""
    lk, im = FACT_LOOKS.c, FACT_IMPRESSIONS.c
    one: ColumnElement[int] = literal_column("1")
    zero: ColumnElement[int] = literal_column("0")
    looks = select(lk.day, lk.content_id.label("item"), one.label("look"), lk.user_id, lk.who).where(
        lk.day.in_(days), lk.content_kind == kind, _not_author(lk.content_kind, lk.content_id, lk.user_id)
    )
    shown = select(im.day, im.content_id, zero, im.user_id, null()).where(
        im.day.in_(days), im.content_kind == kind, _not_author(im.content_kind, im.content_id, im.user_id)
    )
    u = union_all(looks, shown).subquery()
    signed_in_who = case((u.c.user_id.is_not(None), u.c.who))
    return select(
        u.c.item,
        _total(u.c.look).label("views"),
        _total(1 - u.c.look).label("impressions"),
        (func.count(distinct(u.c.who)) - func.count(distinct(signed_in_who))).label("anonymous"),
    ).group_by(u.c.day, u.c.item)


def ranked(kind: str, rolled: list[date], summed: list[date], facts: list[date], limit: int) -> Select:
    """(item, views, impressions, anonymous viewers) of the items with views whose views rank within
    `limit` (ties at the `limit`-th included), summed over the days of each source."""
    parts = [make(kind, days) for make, days in ((_rolled, rolled), (_summed, summed), (_from_facts, facts)) if days]
    u = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()
    views = _total(u.c.views)
    totals = (
        select(
            u.c.item,
            views.label("views"),
            _total(u.c.impressions).label("impressions"),
            _total(u.c.anonymous).label("anonymous"),
            func.rank().over(order_by=views.desc()).label("place"),
        )
        .group_by(u.c.item)
        .having(views > 0)
        .subquery()
    )
    return select(totals.c.item, totals.c.views, totals.c.impressions, totals.c.anonymous).where(
        totals.c.place <= limit
    )


async def _users(
    conn: AsyncConnection, kind: str, items: list[str], summed: list[date], facts: list[date]
) -> dict[str, set[str]]:
    """The signed-in viewers of these items over the days not rolled up, exactly."""
    out: dict[str, set[str]] = {item: set() for item in items}
    parts = []
    if summed:
        s = ITEM_SUMS.c
        parts.append(
            select(s.item, s.user_id).where(
                s.day.in_(summed),
                s.kind == kind,
                s.dim == "viewers",
                s.user_id != "",
                s.n > 0,
                _not_author(s.kind, s.item, s.user_id),
            )
        )
    if facts:
        lk = FACT_LOOKS.c
        parts.append(
            select(lk.content_id, lk.user_id).where(
                lk.day.in_(facts),
                lk.content_kind == kind,
                lk.user_id.is_not(None),
                _not_author(lk.content_kind, lk.content_id, lk.user_id),
            )
        )
    for part in parts:
        for start in range(0, len(items), 500):  # ties on views can make many candidates
            chunk = part.where(part.selected_columns[0].in_(items[start : start + 500]))
            for item, user in await conn.execute(chunk.distinct()):
                out[item].add(user)
    return out


async def popular(
    conn: AsyncConnection, kind: str, first: date, last: date, limit: int
) -> tuple[list[dict[str, Any]], datetime | None]:
    """The `limit` most viewed items of `kind` over [first, last] (`FIELDS` each), and when today was read
    (None: not in the range, or rolled up)."""
    if limit <= 0:
        return [], None
    rolled = await rolled_days(conn, first, last)
    others = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    others = [d for d in others if d not in rolled]
    now = datetime.now(UTC)
    as_of = now if now.date() in others else None
    summed: list[date] = []
    if others:
        kept = FACT_SUM_DAYS.c.day
        summed = sorted((await conn.execute(select(kept).where(kept.in_(others)))).scalars())
    facts = [d for d in others if d not in set(summed)]
    rows = [
        {"id": item, "views": int(views), "impressions": int(impressions or 0), "anonymous": int(anonymous or 0)}
        for item, views, impressions, anonymous in await conn.execute(
            ranked(kind, sorted(rolled), summed, facts, limit)
        )
    ]
    if not rows:
        return [], as_of
    items = [r["id"] for r in rows]
    users = await _users(conn, kind, items, summed, facts) if others else {}
    sketches = await rolled_item_sketches(conn, sorted(rolled), [(kind, item) for item in items])
    for r in rows:
        parts: list[tuple[set[str] | None, bytes | None]] = [(users.get(r["id"]), None)]
        parts += [(None, sketch) for sketch in sketches.get((kind, r["id"]), ())]
        r["unique_viewers"] = merge_users(parts) + r["anonymous"]
    rows.sort(key=lambda r: (-r["views"], -r["unique_viewers"], r["id"]))
    return [{f: r[f] for f in FIELDS} for r in rows[:limit]], as_of

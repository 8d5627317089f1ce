"""A day's figures as SQL over its fact rows (`trackside.storage.facts`), grouped by the database:
the same `DayFigures` that `trackside.aggregate.aggregate_day` makes of the day's raw events, with
no raw event read and no view derived here. Works on SQLite and PostgreSQL.

Rules kept from `aggregate_day` (and why they read as they do):
- unique visitors are distinct `who` ("u:<user>" or "v:<visitor>"), signed-in ones those with a user;
- a page view's breakdown skips an empty key; hours are "00".."23";
- errors and site events count every one (a request's own user), with no visitors (`who` ""), so a
  breakdown's signed-in visitors are 1 when any is signed in (one empty `who`), else 0;
- the author's own looks and impressions are no views: a fact whose user is the item's author in
  `item_authors` is left out of every figure.

Keys need no cut to 255 characters in SQL: no fact column that becomes a key is longer."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import String, and_, case, cast, distinct, exists, func, literal_column, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from trackside.figures import SITE_COUNTS, DayFigures, ItemFigures
from trackside.sketch import Sketch
from trackside.storage import day_sums, item_sums
from trackside.storage.day_sums import PAGE_VIEW_DIMS
from trackside.storage.tables import (
    BOT_HITS,
    EVENTS,
    FACT_IMPRESSIONS,
    FACT_LOOKS,
    FACT_PAGE_VIEWS,
    FACT_SITE_EVENTS,
    FACT_VISITOR_DAYS,
    ITEM_AUTHORS,
)

# Breakdowns of page views (the fact column of each), and of one item's looks and impressions.
LOOK_DIMS = (("country", "country"), ("device", "device"), ("type", "view_type"), ("referrer", "referrer"))
ItemKey = tuple[str, str]


def _text(value: str) -> ColumnElement[Any]:
    return literal_column(f"'{value}'", String)


def two_digits(hour: Any) -> ColumnElement[Any]:
    """An hour as its key ("07"), the same SQL on both databases."""
    as_text = cast(hour, String)
    return case((hour < 10, _text("0") + as_text), else_=as_text)


def _signed_in_who(t: Any) -> ColumnElement[Any]:
    return case((t.c.user_id.is_not(None), t.c.who))


def _not_author(t: Any) -> ColumnElement[Any]:
    """Not the item's author's own (a NULL user never equals an author)."""
    a = ITEM_AUTHORS.c
    return ~exists().where(
        a.content_kind == t.c.content_kind, a.content_id == t.c.content_id, a.author_id == t.c.user_id
    )


def _of_item(t: Any, day: date, item: ItemKey | None) -> list[ColumnElement[Any]]:
    where = [t.c.day == day, _not_author(t)]
    if item is not None:
        where += [t.c.content_kind == item[0], t.c.content_id == item[1]]
    return where


def _present(column: Any) -> ColumnElement[Any]:
    return and_(column.is_not(None), column != "")


# --- site ---------------------------------------------------------------------------------------


def page_view_totals(day: date) -> Select:
    p = FACT_PAGE_VIEWS.c
    return select(
        func.count(),
        func.count(p.user_id),
        func.count(distinct(p.who)),
        func.count(distinct(_signed_in_who(FACT_PAGE_VIEWS))),
    ).where(p.day == day)


def page_view_users(day: date) -> Select:
    p = FACT_PAGE_VIEWS.c
    return select(p.user_id).where(p.day == day, p.user_id.is_not(None)).distinct()


def site_dims(day: date, *, page_views: bool = True, looks: bool = True) -> Select:
    """(dim, key, count, count signed in, visitors, signed-in visitors) of page views by each of
    `PAGE_VIEW_DIMS` (unless `page_views` is False: their sums are kept) and of looks by view type
    and device (unless `looks` is False)."""
    p, lk = FACT_PAGE_VIEWS, FACT_LOOKS
    parts = []
    for dim in PAGE_VIEW_DIMS if page_views else ():
        column = p.c[dim]
        key = two_digits(column) if dim == "hour" else column
        where = [p.c.day == day] if dim == "hour" else [p.c.day == day, _present(column)]
        parts.append(select(_text(dim).label("dim"), key.label("key"), p.c.user_id, p.c.who).where(*where))
    for dim, column in (("view_type", lk.c.view_type), ("view_device", lk.c.device)) if looks else ():
        parts.append(
            select(_text(dim).label("dim"), column.label("key"), lk.c.user_id, lk.c.who).where(*_of_item(lk, day, None))
        )
    u = union_all(*parts).subquery()
    # Grouped per `who` first, then per key: the visitors are then the key's groups (a signed-in
    # one: a group with a signed-in row), and both steps can hash, where COUNT(DISTINCT) sorted every
    # row (the page views and looks of a 1.43M-event day: 10.2 s; 7.3 s, and 4.2 s hashed: `planner_off`).
    w = (
        select(
            u.c.dim,
            u.c.key,
            u.c.who,
            func.count().label("n"),
            func.count(u.c.user_id).label("n_auth"),
            func.max(case((u.c.user_id.is_not(None), 1), else_=0)).label("signed_in"),
        )
        .group_by(u.c.dim, u.c.key, u.c.who)
        .subquery()
    )
    return select(
        w.c.dim,
        w.c.key,
        func.sum(w.c.n),
        func.sum(w.c.n_auth),
        func.count(w.c.who),
        func.sum(case((w.c.who.is_not(None), w.c.signed_in), else_=0)),
    ).group_by(w.c.dim, w.c.key)


def site_events(day: date) -> Select:
    s = FACT_SITE_EVENTS.c
    return select(s.kind, s.name, func.count(), func.count(s.user_id)).where(s.day == day).group_by(s.kind, s.name)


def impression_totals(day: date) -> Select:
    i = FACT_IMPRESSIONS
    return select(func.count(), func.count(i.c.user_id)).where(*_of_item(i, day, None))


def api_totals(day: date) -> Select:
    v = FACT_VISITOR_DAYS.c
    return select(func.sum(v.api_calls), func.sum(v.api_calls_authenticated)).where(v.day == day)


def raw_event_count(day: date) -> Select:
    return select(func.count()).select_from(EVENTS).where(EVENTS.c.day == day)


async def read_site(
    conn: AsyncConnection,
    day: date,
    *,
    with_users: bool = True,
    looks: bool = True,
    sums: day_sums.Sums | None = None,
) -> DayFigures:
    """A day's site figures (no items). `with_users=False` leaves the exact set of users out (a
    rollup makes their sketch from a stream instead: `users_sketch`). `looks=False` leaves out the
    looks' breakdowns by view type and device (`view_type`, `view_device`): sitewide stats show
    neither, and their distinct viewers are most of a day's read once page views are summed.
    `sums`: the day's sums as read earlier in this transaction (a rollup's, before it forgot them)."""
    out = DayFigures(day, rolled=False, as_of=datetime.now(UTC))
    counts: Counter[str] = Counter({name: 0 for name in SITE_COUNTS})

    kept = sums if sums is not None else await day_sums.read(conn, day, with_users=with_users)
    # The API calls derivation counts beside the sums, when it does (`day_sums.COUNTED`).
    counted: dict[str, list[int]] = {}
    if kept is not None:
        # Page views from the sums derivation keeps (a few hundred rows), the same figures.
        kept_sums, users = dict(kept[0]), kept[1]
        for dim in day_sums.COUNTED:
            if (dim, "") in kept_sums:
                counted[dim] = kept_sums.pop((dim, ""))
        views, views_auth, visitors, visitors_auth = kept_sums.pop(day_sums.TOTAL, [0, 0, 0, 0])
        out.dims.update(kept_sums)
        if with_users:
            out.users = users
    else:
        views, views_auth, visitors, visitors_auth = (await conn.execute(page_view_totals(day))).one()
        if with_users:
            out.users = set((await conn.execute(page_view_users(day))).scalars())
    counts["page_views"], counts["page_views_authenticated"] = int(views), int(views_auth)
    out.unique_visitors, out.unique_visitors_authenticated = int(visitors), int(visitors_auth)

    if kept is None or looks:
        for dim, key, n, n_auth, who, who_auth in await conn.execute(
            site_dims(day, page_views=kept is None, looks=looks)
        ):
            out.dims[(dim, key[:255])] = [int(n), int(n_auth), int(who), int(who_auth)]

    for kind, name, n, n_auth in await conn.execute(site_events(day)):
        n, n_auth = int(n), int(n_auth)
        if kind == "unverified":
            out.dims[("unverified", name)] = [n, 0, 0, 0]
            continue
        # No visitors: aggregate_day counts these with an empty `who` (see the module's notes).
        out.dims[(kind, name)] = [n, n_auth, 0, 1 if n_auth else 0]
        if kind == "error":
            counts["errors"] += n
            counts["errors_authenticated"] += n_auth
        elif name in ("signup", "upload"):
            counts[name + "s"] += n
            counts[name + "s_authenticated"] += n_auth

    shown, shown_auth = (await conn.execute(impression_totals(day))).one()
    counts["impressions"], counts["impressions_authenticated"] = int(shown), int(shown_auth)
    if day_sums.API_CALLS in counted:
        api, api_auth = counted[day_sums.API_CALLS][:2]
    else:
        api, api_auth = (await conn.execute(api_totals(day))).one()
    counts["api_calls"], counts["api_calls_authenticated"] = int(api or 0), int(api_auth or 0)
    bots = (await conn.execute(select(func.sum(BOT_HITS.c.hits)).where(BOT_HITS.c.day == day))).scalar()
    counts["bot_hits"] = int(bots or 0)
    out.counts = counts
    return out


async def users_sketch(conn: AsyncConnection, day: date) -> bytes | None:
    """The sketch of the day's signed-in users, from a stream (never the whole set in memory)."""
    sketch = Sketch()
    async for users in _partitions(conn, page_view_users(day)):
        sketch.add(u for (u,) in users)
    return sketch.serialized()


# --- items --------------------------------------------------------------------------------------


def item_totals(day: date, item: ItemKey | None = None) -> Select:
    """Per item: (kind, id, views, views signed in, viewers, signed-in viewers, impressions,
    impressions signed in, first look, last look), looks and impressions in one grouping."""
    lk, im = FACT_LOOKS, FACT_IMPRESSIONS
    one: ColumnElement[int] = literal_column("1")
    zero: ColumnElement[int] = literal_column("0")
    looks = select(
        lk.c.content_kind.label("kind"),
        lk.c.content_id.label("item"),
        one.label("look"),
        lk.c.user_id,
        lk.c.who,
        lk.c.ts,
    ).where(*_of_item(lk, day, item))
    shown = select(im.c.content_kind, im.c.content_id, zero, im.c.user_id, null(), null()).where(
        *_of_item(im, day, item)
    )
    u = union_all(looks, shown).subquery()
    signed_in = u.c.user_id.is_not(None)
    # Grouped per `who` first, then per item: the viewers are then the item's groups with a `who`, and
    # both steps can hash (COUNT(DISTINCT) sorted each item's looks: `planner_off` in the rollup).
    w = (
        select(
            u.c.kind,
            u.c.item,
            u.c.who,
            func.sum(u.c.look).label("views"),
            func.sum(case((and_(u.c.look == 1, signed_in), 1), else_=0)).label("views_authenticated"),
            func.max(case((signed_in, 1), else_=0)).label("signed_in"),
            func.sum(1 - u.c.look).label("impressions"),
            func.sum(case((and_(u.c.look == 0, signed_in), 1), else_=0)).label("impressions_authenticated"),
            func.min(u.c.ts).label("first_at"),
            func.max(u.c.ts).label("last_at"),
        )
        .group_by(u.c.kind, u.c.item, u.c.who)
        .subquery()
    )
    return select(
        w.c.kind,
        w.c.item,
        func.sum(w.c.views).label("views"),
        func.sum(w.c.views_authenticated).label("views_authenticated"),
        func.count(w.c.who).label("unique_viewers"),  # an impression's `who` is NULL here
        func.sum(case((w.c.who.is_not(None), w.c.signed_in), else_=0)).label("unique_viewers_authenticated"),
        func.sum(w.c.impressions).label("impressions"),
        func.sum(w.c.impressions_authenticated).label("impressions_authenticated"),
        func.min(w.c.first_at).label("first_at"),
        func.max(w.c.last_at).label("last_at"),
    ).group_by(w.c.kind, w.c.item)


def item_dims(day: date, item: ItemKey | None = None) -> Select:
    """Per item and breakdown: (kind, id, dim, key, count, count signed in). Looks by country,
    device, type and hour; impressions by type (added to the looks' types) and hour.

    The looks and the impressions are read once each, every row then repeated per breakdown (its key
    that breakdown's column): a union per breakdown read the day's looks five times (a 1M-event day's
    breakdowns: 2.25 -> 0.9 s)."""
    lk, im = FACT_LOOKS, FACT_IMPRESSIONS
    looks = select(
        lk.c.content_kind.label("kind"),
        lk.c.content_id.label("item"),
        *(lk.c[name] for _, name in LOOK_DIMS),
        lk.c.hour,
        lk.c.user_id,
    ).where(*_of_item(lk, day, item))
    shown = select(
        im.c.content_kind.label("kind"), im.c.content_id.label("item"), im.c.view_type, im.c.hour, im.c.user_id
    ).where(*_of_item(im, day, item))

    def each(rows: Any, dims: Sequence[tuple[str, ColumnElement[Any]]], present: bool) -> Select:
        """`rows` once per breakdown: (kind, item, dim, key, user); `present`: a key must be (but an hour)."""
        d = union_all(*(select(_text(dim).label("dim")) for dim, _ in dims)).subquery("d")
        key = case(*((d.c.dim == dim, column) for dim, column in dims))
        out = select(rows.c.kind, rows.c.item, d.c.dim, key.label("key"), rows.c.user_id).select_from(
            rows.join(d, literal_column("1") == literal_column("1"))
        )
        return out.where(or_(d.c.dim == "hour", _present(key))) if present else out

    lr, ir = looks.subquery("l"), shown.subquery("i")
    u = union_all(
        each(lr, [(dim, lr.c[name]) for dim, name in LOOK_DIMS] + [("hour", two_digits(lr.c.hour))], True),
        each(ir, [("type", ir.c.view_type), ("impression_hour", two_digits(ir.c.hour))], False),
    ).subquery()
    return select(u.c.kind, u.c.item, u.c.dim, u.c.key, func.count().label("count"), func.count(u.c.user_id)).group_by(
        u.c.kind, u.c.item, u.c.dim, u.c.key
    )


def item_users(day: date, item: ItemKey | None = None) -> Select:
    """Distinct (kind, id, user) of signed-in looks, in item order (a stream groups them per item)."""
    lk = FACT_LOOKS
    c = lk.c
    return (
        select(c.content_kind, c.content_id, c.user_id)
        .where(*_of_item(lk, day, item), c.user_id.is_not(None))
        .distinct()
        .order_by(c.content_kind, c.content_id, c.user_id)
    )


def _item_of(row: Any) -> ItemFigures:
    f = ItemFigures()
    f.counts = Counter(
        {
            "views": int(row.views or 0),
            "views_authenticated": int(row.views_authenticated or 0),
            "impressions": int(row.impressions or 0),
            "impressions_authenticated": int(row.impressions_authenticated or 0),
        }
    )
    f.viewers = int(row.unique_viewers)
    f.viewers_authenticated = int(row.unique_viewers_authenticated)
    f.anonymous_viewers = f.viewers - f.viewers_authenticated
    f.first_at, f.last_at = row.first_at, row.last_at
    f.users = set()
    return f


async def read_items(conn: AsyncConnection, day: date, item: ItemKey | None = None) -> dict[ItemKey, ItemFigures]:
    """Every item's figures of the day (or only `item`'s, read through the item index), with
    breakdowns and exact sets of signed-in viewers."""
    out: dict[ItemKey, ItemFigures] = {}
    for row in await conn.execute(item_totals(day, item)):
        out[(row.kind, row.item)] = _item_of(row)
    if not out:
        return out
    for kind, item_id, dim, key, n, n_auth in await conn.execute(item_dims(day, item)):
        out[(kind, item_id)].dims[(dim, key)] = [int(n), int(n_auth)]
    for kind, item_id, user in await conn.execute(item_users(day, item)):
        users = out[(kind, item_id)].users
        assert users is not None
        users.add(user)
    return out


async def read_day(conn: AsyncConnection, day: date, *, with_items: bool = True, looks: bool = True) -> DayFigures:
    """The day's figures from its facts, items (with their breakdowns) when `with_items`; `looks`:
    see `read_site`."""
    out = await read_site(conn, day, looks=looks)
    if with_items:
        out.items = await read_items(conn, day)
    return out


async def read_item_day(conn: AsyncConnection, day: date, kind: str, item: str) -> ItemFigures | None:
    """One item's figures of the day (None: no look and no impression): from its sums when the day
    has them (`item_sums`), else from its fact rows only."""
    kept, figures = await item_sums.read_item(conn, day, kind, item)
    if kept:
        return figures
    return (await read_items(conn, day, (kind, item))).get((kind, item))


async def item_user_sketches(conn: AsyncConnection, day: date) -> AsyncIterator[tuple[ItemKey, bytes]]:
    """Each item's sketch of signed-in viewers, made from one ordered stream (`item_sums.sketches_per_item`)."""
    async for pair in item_sums.sketches_per_item(conn, item_users(day)):
        yield pair


async def _partitions(conn: AsyncConnection, query: Select, size: int = 2_000) -> AsyncIterator[Sequence[Any]]:
    result = await conn.stream(query.execution_options(yield_per=size))
    async for part in result.partitions(size):
        yield part

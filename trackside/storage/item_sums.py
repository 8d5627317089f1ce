"""Each item's looks and impressions of the days not rolled up yet, summed by derivation, so that one
item's figures of today are a read of its few hundred sum rows instead of a scan of all its looks
and impressions (the most viewed artwork has thousands a day, spread over the whole table).

Kept beside the page-view sums (`trackside.storage.day_sums`, same days, same way: moved in the
transaction that replaces a visitor-day's facts, by the rows deleted and inserted):
- `item_sum_who`: per (day, item, who) a signed-in viewer's looks; a viewer counts while its row is
  above 0 (anonymous viewers: one row per visitor-day, `trackside.storage.visitor_sums`).
- `item_sums`: per (day, item, breakdown, key, user) a count: looks (`looks`), impressions
  (`impressions`), viewers (`viewers`, moved when a `who` row crosses 0) and the breakdowns of
  `fact_reads.item_dims` (looks by country, device, type, referrer and hour; impressions by type,
  `impression_type`, and hour, `impression_hour`). `user` is the signed-in user, "" for anonymous.

Why per user: the author's own looks are no views, and the item's author can become known after the
look (`item_authors`). Kept per user, the author's rows are left out when reading, whenever the
author became known. Anonymous looks share one row per key."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from trackside.storage.day_sums import add_counts
from trackside.storage.tables import FACT_LOOKS, FACT_SUM_DAYS, ITEM_AUTHORS, ITEM_SUMS

if TYPE_CHECKING:
    from trackside.figures import ItemFigures

# Looks' breakdowns whose empty key is skipped (as `item_dims` does).
_LOOK_DIMS = (("country", "country"), ("device", "device"), ("type", "view_type"), ("referrer", "referrer"))
SumKey = tuple[str, str, str, str, str]  # (kind, id, dim, key, user)
WhoKey = tuple[str, str, str]  # (kind, id, who)


# `get`, not `+=`, as `day_sums.tally`: a Counter's new key costs a Python-level `__missing__` call.


def tally_looks(sums: Counter[SumKey], whos: Counter[WhoKey], rows: Iterable[Any], sign: int) -> None:
    get, get_who = sums.get, whos.get
    for row in rows:
        kind, item, user = row["content_kind"], row["content_id"], row["user_id"] or ""
        keys = [(kind, item, "looks", "", user)]
        for dim, column in _LOOK_DIMS:
            if value := row[column]:
                keys.append((kind, item, dim, value, user))
        keys.append((kind, item, "hour", f"{int(row['hour']):02d}", user))
        for k in keys:
            sums[k] = get(k, 0) + sign
        w = (kind, item, row["who"])
        whos[w] = get_who(w, 0) + sign


def tally_impressions(sums: Counter[SumKey], rows: Iterable[Any], sign: int) -> None:
    get = sums.get
    for row in rows:
        kind, item, user = row["content_kind"], row["content_id"], row["user_id"] or ""
        for k in (
            (kind, item, "impressions", "", user),
            (kind, item, "impression_type", row["view_type"] or "", user),
            (kind, item, "impression_hour", f"{int(row['hour']):02d}", user),
        ):
            sums[k] = get(k, 0) + sign


async def apply(
    conn: AsyncConnection, day: date, sums: Counter[SumKey], whos: Counter[WhoKey], viewers: Counter[tuple[str, str]]
) -> None:
    """Move the day's item sums by these changes; signed-in viewers by their `who` rows crossing 0,
    anonymous ones by `viewers` (kind, item) -> moved (`visitor_sums`)."""
    for (kind, item), moved in viewers.items():
        if moved:
            sums[(kind, item, "viewers", "", "")] += moved
    who_changes = sorted((k, n) for k, n in whos.items() if n)
    if who_changes:
        after = await add_counts(conn, "item_sum_who", ("kind", "item", "who"), day, who_changes, returning=True)
        for (kind, item, who), n in who_changes:
            now = after[(kind, item, who)]
            moved = (now > 0) - (now - n > 0)
            if moved:
                sums[(kind, item, "viewers", "", who[2:] if who.startswith("u:") else "")] += moved
    changes = sorted((k, n) for k, n in sums.items() if n)
    if changes:
        await add_counts(conn, "item_sums", ("kind", "item", "dim", "key", "user_id"), day, changes)


async def read_item(conn: AsyncConnection, day: date, kind: str, item: str) -> tuple[bool, ItemFigures | None]:
    """(whether the day's sums are kept, one item's figures of the day from them): None when it
    has no look and no impression (the author's own left out). Not kept: read the facts."""
    if (await conn.execute(select(FACT_SUM_DAYS.c.day).where(FACT_SUM_DAYS.c.day == day))).first() is None:
        return False, None
    a = ITEM_AUTHORS.c
    author = (
        await conn.execute(select(a.author_id).where(a.content_kind == kind, a.content_id == item))
    ).scalar_one_or_none()
    s = ITEM_SUMS.c
    rows = await conn.execute(
        select(s.dim, s.key, s.user_id, s.n).where(s.day == day, s.kind == kind, s.item == item, s.n != 0)
    )
    from trackside.figures import ItemFigures  # here: figures reads through this package

    f = ItemFigures()
    counts: Counter[str] = Counter()
    dims: dict[tuple[str, str], list[int]] = {}
    users: set[str] = set()
    for dim, key, user, n in rows:
        if author is not None and user == author:
            continue
        signed_in = user != ""
        if dim in ("looks", "impressions", "viewers"):
            counts[dim] += n
            if signed_in:
                counts[dim + "_authenticated"] += n
                if dim == "viewers" and n > 0:
                    users.add(user)
            continue
        # An impression's type adds to the looks' (as `item_dims` groups them).
        d = dims.setdefault(("type" if dim == "impression_type" else dim, key), [0, 0])
        d[0] += n
        if signed_in:
            d[1] += n
    if counts["looks"] <= 0 and counts["impressions"] <= 0:
        return True, None
    f.counts = Counter(
        {
            "views": counts["looks"],
            "views_authenticated": counts["looks_authenticated"],
            "impressions": counts["impressions"],
            "impressions_authenticated": counts["impressions_authenticated"],
        }
    )
    f.viewers, f.viewers_authenticated = counts["viewers"], counts["viewers_authenticated"]
    f.anonymous_viewers = f.viewers - f.viewers_authenticated
    f.dims = {k: v for k, v in dims.items() if v[0] > 0}
    f.users = users
    if counts["looks"] > 0:
        # First and last look: the two ends of the (item, day, ts) index, the author's skipped.
        lk = FACT_LOOKS.c
        where = [lk.content_kind == kind, lk.content_id == item, lk.day == day]
        if author is not None:
            where.append((lk.user_id.is_(None)) | (lk.user_id != author))
        f.first_at, f.last_at = (await conn.execute(select(func.min(lk.ts), func.max(lk.ts)).where(*where))).one()
    return True, f


# --- a rollup's items, from the sums ------------------------------------------------------------
# The same rows as `fact_reads.item_totals`, `item_dims` and `item_user_sketches` group from the day's
# looks and impressions (`read_item`'s figures, every item at once), for a day whose sums are kept.

_COUNTS = ("looks", "viewers", "impressions")


def _not_author(kind: Any, item: Any, user: Any) -> ColumnElement[bool]:
    a = ITEM_AUTHORS.c
    return ~exists().where(a.content_kind == kind, a.content_id == item, a.author_id == user)


def _summed(day: date) -> list[ColumnElement[bool]]:
    """The day's sum rows, the author's own left out (whenever the author became known)."""
    s = ITEM_SUMS.c
    return [s.day == day, s.n != 0, _not_author(s.kind, s.item, s.user_id)]


def rollup_totals(day: date) -> Select:
    """Per item with a look or an impression: `fact_reads.item_totals`' columns, the counts from the
    day's sums, the first and last look from its looks (the two ends of each item's looks)."""
    s = ITEM_SUMS.c
    signed_in = s.user_id != ""

    def total(dim: str, signed: bool = False) -> Any:
        return func.sum(case((and_(s.dim == dim, signed_in) if signed else s.dim == dim, s.n), else_=0))

    t = (
        select(
            s.kind,
            s.item,
            total("looks").label("views"),
            total("looks", True).label("views_authenticated"),
            total("viewers").label("unique_viewers"),
            total("viewers", True).label("unique_viewers_authenticated"),
            total("impressions").label("impressions"),
            total("impressions", True).label("impressions_authenticated"),
        )
        .where(*_summed(day), s.dim.in_(_COUNTS))
        .group_by(s.kind, s.item)
        .having(or_(total("looks") > 0, total("impressions") > 0))
        .subquery()
    )
    lk = FACT_LOOKS.c
    times = (
        select(lk.content_kind, lk.content_id, func.min(lk.ts).label("first_at"), func.max(lk.ts).label("last_at"))
        .where(lk.day == day, _not_author(lk.content_kind, lk.content_id, lk.user_id))
        .group_by(lk.content_kind, lk.content_id)
        .subquery()
    )
    return select(
        t.c.kind,
        t.c.item,
        t.c.views,
        t.c.views_authenticated,
        t.c.unique_viewers,
        t.c.unique_viewers_authenticated,
        t.c.impressions,
        t.c.impressions_authenticated,
        times.c.first_at,
        times.c.last_at,
    ).select_from(t.outerjoin(times, and_(times.c.content_kind == t.c.kind, times.c.content_id == t.c.item)))


def rollup_dims(day: date) -> Select:
    """Per item and breakdown: `fact_reads.item_dims`' columns (an impression's type added to the
    looks' types), from the day's sums."""
    s = ITEM_SUMS.c
    dim = case((s.dim == "impression_type", "type"), else_=s.dim)
    n = func.sum(s.n)
    return (
        select(
            s.kind,
            s.item,
            dim.label("dim"),
            s.key,
            n.label("count"),
            func.sum(case((s.user_id != "", s.n), else_=0)).label("count_authenticated"),
        )
        .where(*_summed(day), s.dim.not_in(_COUNTS))
        .group_by(s.kind, s.item, dim, s.key)
        .having(n > 0)
    )


async def rollup_sketches(conn: AsyncConnection, day: date) -> AsyncIterator[tuple[tuple[str, str], bytes]]:
    """Each item's sketch of signed-in viewers (`fact_reads.item_user_sketches`), its users from the
    day's sums (a viewer's row above 0)."""
    s = ITEM_SUMS.c
    query = (
        select(s.kind, s.item, s.user_id)
        .where(*_summed(day), s.dim == "viewers", s.key == "", s.user_id != "", s.n > 0)
        .order_by(s.kind, s.item, s.user_id)
    )
    async for pair in sketches_per_item(conn, query):
        yield pair


async def sketches_per_item(conn: AsyncConnection, query: Select) -> AsyncIterator[tuple[tuple[str, str], bytes]]:
    """Each item's sketch of its users, from `query`'s rows (kind, item, user), ordered by item: one
    ordered stream, one item's users in memory at a time."""
    from trackside.sketch import sketch_of

    current: tuple[str, str] | None = None
    users: list[str] = []
    result = await conn.stream(query.execution_options(yield_per=2_000))
    async for part in result.partitions(2_000):
        for kind, item, user in part:
            if (kind, item) != current:
                if current is not None and users:
                    yield current, sketch_of(users) or b""
                current, users = (kind, item), []
            users.append(user)
    if current is not None and users:
        yield current, sketch_of(users) or b""

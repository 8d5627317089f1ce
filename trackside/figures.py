"""A day's figures in one shape, whether read from daily rows (a rolled-up day) or grouped from
the day's fact rows (today, or a day not rolled up yet: `trackside.storage.fact_reads`), and their
sum over a range of days.

Ranges add counts, but never unique counts: signed-in users are merged (exact sets and HyperLogLog
sketches), and anonymous visitors are visitor-days (their id rotates daily), summed per day."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.aggregate import SiteDay
from trackside.derive import Derivation
from trackside.enrich.family_names import canonical_browser, canonical_os
from trackside.sketch import DistinctUsers
from trackside.storage.daily import rolled_days
from trackside.storage.facts import derive_marked, derive_round
from trackside.storage.tables import (
    DAILY_CONTENT,
    DAILY_CONTENT_DIMS,
    DAILY_SITE,
    DAILY_SITE_DIMS,
    DERIVE_MARKS,
    ROLLUP_DAYS,
)

logger = logging.getLogger("trackside.figures")

SITE_COUNTS = (
    "page_views",
    "page_views_authenticated",
    "signups",
    "uploads",
    "api_calls",
    "errors",
    "impressions",
    "bot_hits",
    "signups_authenticated",
    "uploads_authenticated",
    "api_calls_authenticated",
    "errors_authenticated",
    "impressions_authenticated",
)
ITEM_COUNTS = ("views", "views_authenticated", "impressions", "impressions_authenticated")


@dataclass(slots=True)
class ItemFigures:
    counts: Counter[str] = field(default_factory=Counter)  # ITEM_COUNTS
    anonymous_viewers: int = 0  # this day's anonymous viewers (visitor-days)
    viewers: int = 0  # this day's unique viewers, signed in or not
    viewers_authenticated: int = 0
    users: set[str] | None = None  # exact, for a live day
    users_sketch: bytes | None = None  # for a rolled day
    first_at: datetime | None = None
    last_at: datetime | None = None
    dims: dict[tuple[str, str], list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class DayFigures:
    day: date
    rolled: bool
    counts: Counter[str] = field(default_factory=Counter)  # SITE_COUNTS
    unique_visitors: int = 0
    unique_visitors_authenticated: int = 0
    users: set[str] | None = None
    users_sketch: bytes | None = None
    # (dim, key) -> [count, count_authenticated, visitors, visitors_authenticated]
    dims: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    items: dict[tuple[str, str], ItemFigures] = field(default_factory=dict)
    # A day read from its facts: when they were read (for a provisional copy, the copy's time).
    as_of: datetime | None = None


def figures_of(site: SiteDay) -> DayFigures:
    """The figures of a day aggregated in memory (`aggregate_day`): what `live_day` reads from facts."""
    out = DayFigures(site.day, rolled=False)
    for name in SITE_COUNTS:
        out.counts[name] = getattr(site, name)
    out.unique_visitors = len(site.visitors)
    out.unique_visitors_authenticated = len(site.visitors_authenticated)
    out.users = set(site.users)
    out.dims = {k: [d.count, d.count_authenticated, len(d.who), len(d.who_authenticated)] for k, d in site.dims.items()}
    for key, item in site.items.items():
        f = ItemFigures()
        for name in ITEM_COUNTS:
            f.counts[name] = getattr(item, name)
        f.viewers = len(item.viewers)
        f.viewers_authenticated = len(item.viewers_authenticated)
        f.anonymous_viewers = f.viewers - f.viewers_authenticated
        f.users = set(item.users)
        f.first_at, f.last_at = item.first_at, item.last_at
        f.dims = {k: list(v) for k, v in item.dims.items()}
        out.items[key] = f
    return out


async def live_day(
    conn: AsyncConnection,
    day: date,
    window_seconds: float,
    *,
    with_items: bool = True,
    derivation: Derivation | None = None,
) -> DayFigures:
    """A day not rolled up, grouped from its fact rows (items only when `with_items`). The view
    window is the one facts were derived with at ingest: `window_seconds` is not used any more.
    With `derivation`, visitor-days still marked are derived first (`derive_pending`)."""
    if derivation is not None:
        await derive_pending(conn, day, day, derivation)
    return await _facts_day(conn, day, with_items=with_items)


async def _facts_day(conn: AsyncConnection, day: date, *, with_items: bool, looks: bool = True) -> DayFigures:
    # Imported here: fact_reads builds on this module's types.
    from trackside.storage.fact_reads import read_day

    return await read_day(conn, day, with_items=with_items, looks=looks)


# A read derives at most this many queued visitor-days itself (oldest first, about a third of a
# second): the rest is the deriver's. Three rounds of 2,000 a day made every read under a backlog
# (a busy site, the deriver behind) take seconds, and duplicated the deriver's own rounds.
READ_ROUND = 500


@dataclass(frozen=True, slots=True)
class Pending:
    """Events stored and not in the figures yet: queued visitor-days of the days read, not derived."""

    visitor_days: int = 0
    oldest: datetime | None = None  # when the oldest of them was queued (UTC)

    def meta(self) -> dict[str, Any]:
        return {
            "visitor_days": self.visitor_days,
            "oldest_queued_at": None if self.oldest is None else self.oldest.replace(tzinfo=UTC).isoformat(),
            "meaning": PENDING_MEANING,
        }


PENDING_MEANING = (
    "events stored but not in these figures yet: the visitor-days (one visitor's events of one UTC day) "
    "still queued for derivation, and when the oldest was queued; the deriver adds them within seconds "
    "unless it is behind (a busy site); absent when every stored event is in the figures"
)


async def derive_pending(
    conn: AsyncConnection, first: date, last: date, derivation: Derivation, *, limit: int | None = READ_ROUND
) -> Pending:
    """Derive up to `limit` visitor-days still marked (oldest first; None: all of them) of the days of
    [first, last] not rolled up, before they are read, and say what is left (`Pending`): a figure
    never misses events silently.

    Only with the settings' derivation (`derivation_of`): facts keep only the paths the route rules
    allow, so a read without it leaves marks to the writer, the worker and the rollup, which have it.
    Done on other connections of the same engine, each part committed, before `conn` reads: a
    read in a transaction (a snapshot) sees them only if its first read comes after. No rolled day
    is derived here (its figures are its daily rows)."""
    m, r = DERIVE_MARKS.c, ROLLUP_DAYS.c
    clean = select(r.day).where(r.dirty.is_(False), r.rolled_at.is_not(None), r.day >= first, r.day <= last)
    in_range = (m.day >= first, m.day <= last, m.day.not_in(clean))
    engine = conn.engine
    async with engine.connect() as other:
        days = sorted((await other.execute(select(m.day).where(*in_range).distinct())).scalars())
    budget = limit
    for day in days:
        try:
            if budget is None:  # everything (the terminal report, an operator's command)
                await derive_marked(engine, derivation, day)
                continue
            done = await derive_round(engine, derivation, day=day, limit=budget)
        except Exception:
            # A read still answers (without those visitor-days) when a long rollup holds SQLite's
            # write lock past the busy timeout; the rollup derives them itself.
            logger.warning("could not derive the marked visitor-days of %s before reading it", day, exc_info=True)
            break
        budget -= len(done.derived) + done.superseded
        if budget <= 0:
            break
    if not days:
        return Pending()
    async with engine.connect() as other:
        left, oldest = (await other.execute(select(func.count(), func.min(m.marked_at)).where(*in_range))).one()
    return Pending(int(left), oldest)


async def rolled_day(conn: AsyncConnection, day: date, *, with_items: bool = True) -> DayFigures:
    """A rolled-up day from its daily rows. Items are read only when asked for: a site-level read
    has no use for the day's (many) content rows; an item's own breakdowns come from `item_days`."""
    return (await rolled_days_figures(conn, [day], with_items=with_items))[day]


async def rolled_days_figures(
    conn: AsyncConnection, days: list[date], *, with_items: bool = True
) -> dict[date, DayFigures]:
    """`rolled_day` of each of these days, one query per table for them all (a month of closed
    days was two round trips a day)."""
    out = {day: DayFigures(day, rolled=True) for day in days}
    if not days:
        return out
    for row in (await conn.execute(select(DAILY_SITE).where(DAILY_SITE.c.day.in_(days)))).mappings():
        f = out[row["day"]]
        for name in SITE_COUNTS:
            f.counts[name] = row[name]
        f.unique_visitors = row["unique_visitors"]
        f.unique_visitors_authenticated = row["unique_visitors_authenticated"]
        f.users_sketch = row["users_sketch"]
    dims = select(DAILY_SITE_DIMS).where(DAILY_SITE_DIMS.c.day.in_(days))
    for r in (await conn.execute(dims)).mappings():
        f = out[r["day"]]
        dim, key = r["dim"], r["key"]
        values = [r["count"], r["count_authenticated"], r["visitors"], r["visitors_authenticated"]]
        if dim in _RENAMED:
            # A day rolled by an older version names browsers and OSes its way ("Mobile Safari",
            # "Mac OS X"): read as today's names. Two old names of one day can meet under one new
            # name; their visitors add up exactly, since a visitor id includes the user agent.
            key = _RENAMED[dim](key)
            known = f.dims.get((dim, key))
            if known is not None:
                values = [a + b for a, b in zip(known, values, strict=True)]
        f.dims[(dim, key)] = values
    if with_items:
        for r in (await conn.execute(select(DAILY_CONTENT).where(DAILY_CONTENT.c.day.in_(days)))).mappings():
            out[r["day"]].items[(r["content_kind"], r["content_id"])] = _item_row(r)
    return out


_RENAMED = {"browser": canonical_browser, "os": canonical_os}


class TodayElsewhere(Protocol):
    """Today's figures computed or kept elsewhere (with its items' totals when `with_items`)."""

    def __call__(self, day: date, window_seconds: float, *, with_items: bool) -> Awaitable[DayFigures]: ...


async def load_days(
    conn: AsyncConnection,
    first: date,
    last: date,
    window_seconds: float,
    *,
    with_items: bool = True,
    rolled_items: bool | None = None,
    today_elsewhere: TodayElsewhere | None = None,
    derivation: Derivation | None = None,
    looks: bool = True,
) -> list[DayFigures]:
    """Every day of [first, last]: daily rows where the day is rolled up and clean, fact rows
    otherwise. A day is read one way or the other, whole: no gap, no overlap at the boundary.
    `looks=False`: days read from facts leave out the looks' breakdowns (`read_site`).

    `today_elsewhere` computes today (never rolled up, so never pruned under the read) in another
    process, off the caller's event loop. `derivation`: see `derive_pending`."""
    if derivation is not None:
        await derive_pending(conn, first, last, derivation)
    rolled = await rolled_days(conn, first, last)
    read_rolled = await rolled_days_figures(
        conn, sorted(rolled), with_items=with_items if rolled_items is None else rolled_items
    )
    today = datetime.now(UTC).date()
    days = []
    day = first
    while day <= last:
        if day in rolled:
            days.append(read_rolled[day])
        elif day == today and today_elsewhere is not None:
            days.append(await today_elsewhere(day, window_seconds, with_items=with_items))
        else:
            days.append(await _facts_day(conn, day, with_items=with_items, looks=looks))
        day += timedelta(days=1)
    return days


async def rolled_item_totals(conn: AsyncConnection, days: list[date]) -> dict[tuple[str, str], ItemFigures]:
    """Every item's totals over these rolled days, summed by the database (a month of a busy site is
    hundreds of thousands of daily rows): counts, and anonymous viewers as visitor-days. Signed-in
    viewers are merged from sketches, which `rolled_item_sketches` reads for the items that need them."""
    if not days:
        return {}
    c = DAILY_CONTENT.c
    query = (
        select(
            c.content_kind,
            c.content_id,
            *(func.sum(c[name]) for name in ITEM_COUNTS),
            func.sum(c.unique_viewers - c.unique_viewers_authenticated),
        )
        .where(c.day.in_(days))
        .group_by(c.content_kind, c.content_id)
    )
    out: dict[tuple[str, str], ItemFigures] = {}
    for kind, item, *sums, anonymous in await conn.execute(query):
        f = ItemFigures(anonymous_viewers=int(anonymous or 0))
        f.counts = Counter({name: int(n or 0) for name, n in zip(ITEM_COUNTS, sums, strict=True)})
        out[(kind, item)] = f
    return out


async def rolled_item_sketches(
    conn: AsyncConnection, days: list[date], keys: list[tuple[str, str]] | None
) -> dict[tuple[str, str], list[bytes]]:
    """The signed-in viewers' sketches of these items (every item: None) over these rolled days."""
    if not days or keys == []:
        return {}
    c = DAILY_CONTENT.c
    query = select(c.content_kind, c.content_id, c.users_sketch).where(c.day.in_(days), c.users_sketch.is_not(None))
    out: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    if keys is None:
        parts = [query]
    else:
        # Per kind, ids as a list: SQLite then searches each item's rows, where a list of (kind, id) pairs
        # made it read every row of each day and filter them (a month of items for ten).
        ids_of: dict[str, list[str]] = defaultdict(list)
        for kind, item in keys:
            ids_of[kind].append(item)
        parts = [
            query.where(c.content_kind == kind, c.content_id.in_(ids[first : first + 500]))
            for kind, ids in ids_of.items()
            for first in range(0, len(ids), 500)
        ]
    for part in parts:
        for kind, item, sketch in await conn.execute(part):
            out[(kind, item)].append(sketch)
    return dict(out)


async def item_days(
    conn: AsyncConnection,
    kind: str,
    item: str,
    first: date,
    last: date,
    window_seconds: float,
    today_copy: DayFigures | None = None,
    *,
    derivation: Derivation | None = None,
) -> list[tuple[date, ItemFigures | None]]:
    """One item's figures for every day of [first, last] (None: nothing that day), read the same
    way as `load_days`: daily rows for rolled days, the item's fact rows otherwise, except the day of
    `today_copy` (today's provisional copy), read from it. `derivation`: see `derive_pending`."""
    from trackside.storage.fact_reads import read_item_day

    if derivation is not None:
        await derive_pending(conn, first, last, derivation)
    rolled = await rolled_days(conn, first, last)
    rows: dict[date, ItemFigures] = {}
    if rolled:
        where = (
            DAILY_CONTENT.c.content_kind == kind,
            DAILY_CONTENT.c.content_id == item,
            DAILY_CONTENT.c.day >= first,
            DAILY_CONTENT.c.day <= last,
        )
        for r in (await conn.execute(select(DAILY_CONTENT).where(*where))).mappings():
            rows[r["day"]] = _item_row(r)
        dims_where = (
            DAILY_CONTENT_DIMS.c.content_kind == kind,
            DAILY_CONTENT_DIMS.c.content_id == item,
            DAILY_CONTENT_DIMS.c.day >= first,
            DAILY_CONTENT_DIMS.c.day <= last,
        )
        for r in (await conn.execute(select(DAILY_CONTENT_DIMS).where(*dims_where))).mappings():
            if r["day"] in rows:
                rows[r["day"]].dims[(r["dim"], r["key"])] = [r["count"], r["count_authenticated"]]
    out: list[tuple[date, ItemFigures | None]] = []
    day = first
    while day <= last:
        if day in rolled:
            out.append((day, rows.get(day)))
        elif today_copy is not None and day == today_copy.day:
            out.append((day, today_copy.items.get((kind, item))))
        else:
            out.append((day, await read_item_day(conn, day, kind, item)))
        day += timedelta(days=1)
    return out


def _item_row(r: Any) -> ItemFigures:
    f = ItemFigures()
    for name in ITEM_COUNTS:
        f.counts[name] = r[name]
    f.viewers = r["unique_viewers"]
    f.viewers_authenticated = r["unique_viewers_authenticated"]
    f.anonymous_viewers = f.viewers - f.viewers_authenticated
    f.users_sketch = r["users_sketch"]
    f.first_at, f.last_at = r["first_at"], r["last_at"]
    return f


@dataclass(slots=True)
class RangeTotals:
    counts: Counter[str]
    unique_visitors: int
    unique_visitors_authenticated: int
    dims: dict[str, Counter[str]]
    dims_authenticated: dict[str, Counter[str]]
    items: dict[tuple[str, str], dict[str, int]]


def merge_users(parts: list[tuple[set[str] | None, bytes | None]]) -> int:
    users = DistinctUsers()
    for exact, sketch in parts:
        if exact:
            users.add_users(exact)
        users.add_sketch(sketch)
    return users.estimate()


def sum_days(days: list[DayFigures]) -> RangeTotals:
    counts: Counter[str] = Counter()
    dims: dict[str, Counter[str]] = defaultdict(Counter)
    dims_auth: dict[str, Counter[str]] = defaultdict(Counter)
    anonymous = 0
    site_users: list[tuple[set[str] | None, bytes | None]] = []
    item_parts: dict[tuple[str, str], list[ItemFigures]] = defaultdict(list)
    for d in days:
        counts.update(d.counts)
        anonymous += d.unique_visitors - d.unique_visitors_authenticated
        site_users.append((d.users, d.users_sketch))
        for (dim, key), (count, count_auth, _, _) in d.dims.items():
            dims[dim][key] += count
            if count_auth:
                dims_auth[dim][key] += count_auth
        for item_key, item in d.items.items():
            item_parts[item_key].append(item)
    signed_in = merge_users(site_users)
    items: dict[tuple[str, str], dict[str, int]] = {}
    for item_key, parts in item_parts.items():
        total: Counter[str] = Counter()
        for p in parts:
            total.update(p.counts)
        users = merge_users([(p.users, p.users_sketch) for p in parts])
        row = {name: total[name] for name in ITEM_COUNTS}
        row["unique_viewers_authenticated"] = users
        row["unique_viewers"] = users + sum(p.anonymous_viewers for p in parts)
        items[item_key] = row
    return RangeTotals(counts, signed_in + anonymous, signed_in, dict(dims), dict(dims_auth), items)

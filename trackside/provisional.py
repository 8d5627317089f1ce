"""Provisional figures of today: derived from raw events every few minutes off the request path
(by the worker, or the embedded schedule's separate process) and stored whole, so a stats read of
today costs one row instead of a derivation of the day's raw events (tens of seconds on a busy
day). Reads use them while they are at most `MAX_AGE_SECONDS` old; `?refresh=true` derives anew.
Closed days never use them: they are rolled up.

What a copy means: today's figures from the raw events stored by its `computed_at` (the moment the
derivation started reading them), never later ones. Every read that uses a copy says so: its
`computed_at` is the copy's. A copy is replaced only by a newer one (a slow derivation that started
earlier never overwrites a later one), and only today's copy is ever read, so a rollup (closed days
only) cannot make it stale; events stored after it (traffic, a spool replay, a test's seeding) are
in the next copy, or in a `?refresh=true` read now; `invalidate` drops it at once."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.figures import DayFigures, ItemFigures, live_day
from trackside.storage.tables import PROVISIONAL_DAYS, PROVISIONAL_ITEMS

REFRESH_SECONDS = 300.0
MAX_AGE_SECONDS = 600.0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _item_summary(kind: str, item_id: str, f: ItemFigures) -> list[Any]:
    return [
        kind,
        item_id,
        dict(f.counts),
        f.viewers,
        f.viewers_authenticated,
        f.anonymous_viewers,
        sorted(f.users or ()),
    ]


def _item_of(summary: list[Any]) -> ItemFigures:
    # Totals only: what content rankings read of every item (first and last views and breakdowns
    # are in the item's own row).
    _, _, counts, viewers, viewers_auth, anonymous, users = summary
    f = ItemFigures()
    f.counts = Counter(counts)
    f.viewers, f.viewers_authenticated, f.anonymous_viewers = viewers, viewers_auth, anonymous
    f.users = set(users)
    return f


def _packed(data: Any) -> bytes:
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 6)


def encode(day: DayFigures) -> tuple[bytes, bytes, dict[tuple[str, str], bytes]]:
    """The copy's three parts: the site's figures; every item's totals (no breakdowns), for
    content rankings; each item whole, for one item's stats. A read decodes only the part it uses:
    a busy day's items with their breakdowns take the better part of a second to decode."""
    site = {
        "day": day.day.isoformat(),
        "counts": dict(day.counts),
        "unique_visitors": day.unique_visitors,
        "unique_visitors_authenticated": day.unique_visitors_authenticated,
        "users": sorted(day.users or ()),
        "dims": [[d, k, *v] for (d, k), v in day.dims.items()],
    }
    summaries = {key: _item_summary(*key, f) for key, f in day.items.items()}
    whole = {
        key: json.dumps(
            [summaries[key], _iso(f.first_at), _iso(f.last_at), [[d, k, *v] for (d, k), v in f.dims.items()]],
            separators=(",", ":"),
        ).encode()
        for key, f in day.items.items()
    }
    return _packed(site), _packed(list(summaries.values())), whole


def decode(site: bytes, items: bytes | None = None, computed_at: datetime | None = None) -> DayFigures:
    """A copy's site figures, with every item's totals (no breakdowns) when `items` is given."""
    data = json.loads(zlib.decompress(site))
    out = DayFigures(date.fromisoformat(data["day"]), rolled=False, as_of=computed_at)
    out.counts = Counter(data["counts"])
    out.unique_visitors = data["unique_visitors"]
    out.unique_visitors_authenticated = data["unique_visitors_authenticated"]
    out.users = set(data["users"])
    out.dims = {(d, k): list(v) for d, k, *v in data["dims"]}
    if items is not None:
        out.items = {(s[0], s[1]): _item_of(s) for s in json.loads(zlib.decompress(items))}
    return out


def decode_item(payload: bytes) -> ItemFigures:
    summary, first_at, last_at, dims = json.loads(payload)
    f = _item_of(summary)
    f.first_at, f.last_at = _dt(first_at), _dt(last_at)
    f.dims = {(d, k): list(v) for d, k, *v in dims}
    return f


async def store(engine: AsyncEngine, figures: DayFigures, computed_at: datetime | None = None) -> None:
    """Store `figures` as the day's copy, as of `computed_at` (default: `figures.as_of`, when the
    derivation read the raw events). An older derivation never replaces a newer copy."""
    when = computed_at or figures.as_of or datetime.now(UTC)
    when = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    site, items, whole = encode(figures)
    async with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(PROVISIONAL_DAYS).values(day=figures.day, computed_at=when, payload=site, item_totals=items)
        stmt = stmt.on_conflict_do_update(
            index_elements=["day"],
            set_={
                "computed_at": stmt.excluded.computed_at,
                "payload": stmt.excluded.payload,
                "item_totals": stmt.excluded.item_totals,
            },
            where=PROVISIONAL_DAYS.c.computed_at <= stmt.excluded.computed_at,
        )
        replaced = (await conn.execute(stmt)).rowcount
        if replaced:
            # The items go with the day's row, in the same transaction: a reader sees one copy whole.
            await conn.execute(PROVISIONAL_ITEMS.delete().where(PROVISIONAL_ITEMS.c.day == figures.day))
            rows = [
                {"day": figures.day, "content_kind": kind, "content_id": item_id, "payload": payload}
                for (kind, item_id), payload in whole.items()
            ]
            for first in range(0, len(rows), 5000):
                await conn.execute(PROVISIONAL_ITEMS.insert(), rows[first : first + 5000])
        # Yesterday's is no use once today's exists (and yesterday is rolled up or read raw).
        await conn.execute(PROVISIONAL_DAYS.delete().where(PROVISIONAL_DAYS.c.day < figures.day))
        await conn.execute(PROVISIONAL_ITEMS.delete().where(PROVISIONAL_ITEMS.c.day < figures.day))


async def build(engine: AsyncEngine, window_seconds: float, now: datetime | None = None) -> DayFigures:
    """Derive today's figures from its raw events and store them as the copy: what the worker's cron
    runs every `REFRESH_SECONDS` (and the benchmark, before timing reads)."""
    day = (now or datetime.now(UTC)).astimezone(UTC).date()
    async with engine.connect() as conn:
        figures = await live_day(conn, day, window_seconds)
    await store(engine, figures)
    return figures


async def invalidate(engine: AsyncEngine, day: date | None = None) -> None:
    """Drop the copy (of `day`, or every one): reads derive today anew until the next copy."""
    async with engine.begin() as conn:
        for table in (PROVISIONAL_DAYS, PROVISIONAL_ITEMS):
            stmt = table.delete()
            await conn.execute(stmt if day is None else stmt.where(table.c.day == day))


# The last copy decoded in this process, with and without its items: readers share it until a
# newer one is stored (decoding a busy day's copy costs far more than the one-column query that
# tells whether it changed).
_decoded: dict[bool, tuple[str, date, datetime, DayFigures]] = {}


def _recent(computed_at: datetime | None, now: datetime | None) -> bool:
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    return computed_at is not None and now - computed_at <= timedelta(seconds=MAX_AGE_SECONDS)


async def load(
    conn: AsyncConnection, day: date, now: datetime | None = None, *, with_items: bool = True
) -> DayFigures | None:
    """The day's copy while it is at most `MAX_AGE_SECONDS` old (its `as_of` set), else None; its
    items' totals without breakdowns when `with_items`. Shared between readers: treat it as read-only."""
    computed_at = (
        await conn.execute(select(PROVISIONAL_DAYS.c.computed_at).where(PROVISIONAL_DAYS.c.day == day))
    ).scalar()
    if not _recent(computed_at, now):
        return None
    database = str(conn.engine.url)
    known = _decoded.get(with_items)
    if known is not None and known[:3] == (database, day, computed_at):
        return known[3]
    columns = [PROVISIONAL_DAYS.c.computed_at, PROVISIONAL_DAYS.c.payload]
    if with_items:
        columns.append(PROVISIONAL_DAYS.c.item_totals)
    row = (await conn.execute(select(*columns).where(PROVISIONAL_DAYS.c.day == day))).first()
    if row is None:  # dropped in between
        return None
    figures = decode(row.payload, row.item_totals if with_items else None, row.computed_at.replace(tzinfo=UTC))
    _decoded[with_items] = (database, day, row.computed_at, figures)
    return figures


async def load_item(
    conn: AsyncConnection, day: date, kind: str, item_id: str, now: datetime | None = None
) -> DayFigures | None:
    """The day's copy with this one item in it, whole (or with no item: nothing of it that day),
    while the copy is recent; else None. One statement, so the item and the copy's time agree."""
    found = (
        await conn.execute(
            select(PROVISIONAL_DAYS.c.computed_at, PROVISIONAL_ITEMS.c.payload)
            .select_from(
                PROVISIONAL_DAYS.outerjoin(
                    PROVISIONAL_ITEMS,
                    (PROVISIONAL_ITEMS.c.day == PROVISIONAL_DAYS.c.day)
                    & (PROVISIONAL_ITEMS.c.content_kind == kind)
                    & (PROVISIONAL_ITEMS.c.content_id == item_id),
                )
            )
            .where(PROVISIONAL_DAYS.c.day == day)
        )
    ).first()
    if found is None or not _recent(found.computed_at, now):
        return None
    out = DayFigures(day, rolled=False, as_of=found.computed_at.replace(tzinfo=UTC))
    if found.payload is not None:
        out.items[(kind, item_id)] = decode_item(found.payload)
    return out

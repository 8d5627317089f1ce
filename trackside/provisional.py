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
from trackside.storage.tables import PROVISIONAL_DAYS

REFRESH_SECONDS = 300.0
MAX_AGE_SECONDS = 600.0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def encode(day: DayFigures) -> bytes:
    data: dict[str, Any] = {
        "day": day.day.isoformat(),
        "counts": dict(day.counts),
        "unique_visitors": day.unique_visitors,
        "unique_visitors_authenticated": day.unique_visitors_authenticated,
        "users": sorted(day.users or ()),
        "dims": [[d, k, *v] for (d, k), v in day.dims.items()],
        "items": [
            [
                kind,
                item_id,
                dict(f.counts),
                f.viewers,
                f.viewers_authenticated,
                f.anonymous_viewers,
                sorted(f.users or ()),
                _iso(f.first_at),
                _iso(f.last_at),
                [[d, k, *v] for (d, k), v in f.dims.items()],
            ]
            for (kind, item_id), f in day.items.items()
        ],
    }
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 6)


def decode(payload: bytes, computed_at: datetime | None = None) -> DayFigures:
    data = json.loads(zlib.decompress(payload))
    out = DayFigures(date.fromisoformat(data["day"]), rolled=False, as_of=computed_at)
    out.counts = Counter(data["counts"])
    out.unique_visitors = data["unique_visitors"]
    out.unique_visitors_authenticated = data["unique_visitors_authenticated"]
    out.users = set(data["users"])
    out.dims = {(d, k): list(v) for d, k, *v in data["dims"]}
    for kind, item_id, counts, viewers, viewers_auth, anonymous, users, first_at, last_at, dims in data["items"]:
        f = ItemFigures()
        f.counts = Counter(counts)
        f.viewers, f.viewers_authenticated, f.anonymous_viewers = viewers, viewers_auth, anonymous
        f.users = set(users)
        f.first_at, f.last_at = _dt(first_at), _dt(last_at)
        f.dims = {(d, k): list(v) for d, k, *v in dims}
        out.items[(kind, item_id)] = f
    return out


async def store(engine: AsyncEngine, figures: DayFigures, computed_at: datetime | None = None) -> None:
    """Store `figures` as the day's copy, as of `computed_at` (default: `figures.as_of`, when the
    derivation read the raw events). An older derivation never replaces a newer copy."""
    when = computed_at or figures.as_of or datetime.now(UTC)
    when = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    async with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(PROVISIONAL_DAYS).values(day=figures.day, computed_at=when, payload=encode(figures))
        stmt = stmt.on_conflict_do_update(
            index_elements=["day"],
            set_={"computed_at": stmt.excluded.computed_at, "payload": stmt.excluded.payload},
            where=PROVISIONAL_DAYS.c.computed_at <= stmt.excluded.computed_at,
        )
        await conn.execute(stmt)
        # Yesterday's is no use once today's exists (and yesterday is rolled up or read raw).
        await conn.execute(PROVISIONAL_DAYS.delete().where(PROVISIONAL_DAYS.c.day < figures.day))


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
        stmt = PROVISIONAL_DAYS.delete()
        await conn.execute(stmt if day is None else stmt.where(PROVISIONAL_DAYS.c.day == day))


# The last copy decoded in this process: readers share it until a newer one is stored (decoding a
# busy day's copy costs far more than the one-column query that tells whether it changed).
_decoded: tuple[str, date, datetime, DayFigures] | None = None


async def load(conn: AsyncConnection, day: date, now: datetime | None = None) -> DayFigures | None:
    """The day's copy while it is at most `MAX_AGE_SECONDS` old (its `as_of` set), else None.
    Shared between readers: treat it as read-only."""
    global _decoded
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    computed_at = (
        await conn.execute(select(PROVISIONAL_DAYS.c.computed_at).where(PROVISIONAL_DAYS.c.day == day))
    ).scalar()
    if computed_at is None or now - computed_at > timedelta(seconds=MAX_AGE_SECONDS):
        return None
    database = str(conn.engine.url)
    if _decoded is not None and _decoded[:3] == (database, day, computed_at):
        return _decoded[3]
    row = (
        await conn.execute(
            select(PROVISIONAL_DAYS.c.computed_at, PROVISIONAL_DAYS.c.payload).where(PROVISIONAL_DAYS.c.day == day)
        )
    ).first()
    if row is None:  # dropped in between
        return None
    figures = decode(row.payload, row.computed_at.replace(tzinfo=UTC))
    _decoded = (database, day, row.computed_at, figures)
    return figures

"""Provisional figures of today: derived from raw events every few minutes off the request path
(by the worker, or the embedded schedule's separate process) and stored whole, so a stats read of
today costs one row instead of a derivation of the day's raw events (tens of seconds on a busy
day). Reads use them while they are at most `MAX_AGE_SECONDS` old; `?refresh=true` derives anew.
Closed days never use them: they are rolled up."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.figures import DayFigures, ItemFigures
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


def decode(payload: bytes) -> DayFigures:
    data = json.loads(zlib.decompress(payload))
    out = DayFigures(date.fromisoformat(data["day"]), rolled=False)
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


async def store(engine: AsyncEngine, figures: DayFigures, computed_at: datetime) -> None:
    async with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(PROVISIONAL_DAYS).values(
            day=figures.day, computed_at=computed_at.replace(tzinfo=None), payload=encode(figures)
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["day"], set_={"computed_at": stmt.excluded.computed_at, "payload": stmt.excluded.payload}
        )
        await conn.execute(stmt)
        # Yesterday's is no use once today's exists (and yesterday is rolled up or read raw).
        await conn.execute(PROVISIONAL_DAYS.delete().where(PROVISIONAL_DAYS.c.day < figures.day))


async def load(conn: AsyncConnection, day: date, now: datetime | None = None) -> DayFigures | None:
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    row = (
        await conn.execute(
            select(PROVISIONAL_DAYS.c.computed_at, PROVISIONAL_DAYS.c.payload).where(PROVISIONAL_DAYS.c.day == day)
        )
    ).first()
    if row is None or now - row.computed_at > timedelta(seconds=MAX_AGE_SECONDS):
        return None
    return decode(row.payload)

"""Daily salts in the database: one per UTC date for every sidecar, made with insert-or-ignore
(whoever comes first wins, everyone reads the winner).

A day's salt is made from noon of the day before (so a storage outage at midnight costs nothing),
kept one hour past its day for requests in flight, then deleted: no salt lives 48 hours."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from trackside.storage.tables import SALTS

logger = logging.getLogger("trackside.salts")


class DatabaseSalts:
    """Keeps the salts for yesterday, today and tomorrow in memory; `salt_for` never waits."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._salts: dict[date, bytes] = {}

    def salt_for(self, day: date) -> bytes | None:
        return self._salts.get(day)

    def salt_for_today(self) -> bytes | None:
        return self._salts.get(datetime.now(UTC).date())

    async def refresh(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        today = now.date()
        wanted = [today - timedelta(days=1), today, today + timedelta(days=1)]
        async with self.engine.begin() as conn:
            ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            created = now.replace(tzinfo=None)
            for day in wanted[1:] if now.hour >= 12 else wanted[1:2]:
                await conn.execute(
                    ins(SALTS).on_conflict_do_nothing(index_elements=["day"]),
                    [{"day": day, "salt": secrets.token_hex(32), "created_at": created}],
                )
            rows = (await conn.execute(select(SALTS.c.day, SALTS.c.salt).where(SALTS.c.day.in_(wanted)))).all()
        self._salts = {row.day: bytes.fromhex(row.salt) for row in rows}

    async def prune(self, now: datetime | None = None) -> int:
        """Delete the salts of days that ended more than an hour ago."""
        now = now or datetime.now(UTC)
        cutoff = (now - timedelta(hours=1)).date()
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(SALTS).where(SALTS.c.day < cutoff))
        return max(result.rowcount, 0)

"""Writes: idempotent event inserts and bot counters. The only dialect branch for upserts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.batch import Batch, BotKey
from trackside.events import Event
from trackside.storage.tables import BotHitRow, EventRow, SpoolBatchRow

EVENTS = EventRow.__table__  # type: ignore[attr-defined]
BOT_HITS = BotHitRow.__table__  # type: ignore[attr-defined]
APPLIED = SpoolBatchRow.__table__  # type: ignore[attr-defined]


def _insert(conn: AsyncConnection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def event_row(e: Event) -> dict[str, Any]:
    when = datetime.fromtimestamp(e.ts, UTC)
    row = e.to_dict()
    row["ts"] = when.replace(tzinfo=None)
    row["day"] = when.date()
    row["hour"] = when.hour
    return row


async def write_batch(engine: AsyncEngine, batch: Batch) -> int:
    """Store one batch in one transaction. Events are insert-or-ignore on their id; bot counters
    are added only the first time a batch id is seen. Rerunning a batch changes nothing."""
    async with engine.begin() as conn:
        return await write_batch_on(conn, batch)


async def write_batch_on(conn: AsyncConnection, batch: Batch) -> int:
    inserted = 0
    if batch.events:
        stmt = _insert(conn, EVENTS).on_conflict_do_nothing(index_elements=["id"])
        # Chunked: SQLite caps the number of bound parameters per statement.
        rows = [event_row(e) for e in batch.events]
        for start in range(0, len(rows), 500):
            result = await conn.execute(stmt, rows[start : start + 500])
            inserted += max(result.rowcount, 0)
    if batch.bots:
        first_time = await conn.execute(
            _insert(conn, APPLIED).on_conflict_do_nothing(index_elements=["id"]),
            [{"id": batch.id, "applied_at": datetime.now(UTC).replace(tzinfo=None)}],
        )
        if first_time.rowcount == 1:
            await add_bot_hits(conn, batch.bots)
    return inserted


async def add_bot_hits(conn: AsyncConnection, counts: Counter[BotKey]) -> None:
    if not counts:
        return
    stmt = _insert(conn, BOT_HITS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "bot", "label"], set_={"hits": BOT_HITS.c.hits + stmt.excluded.hits}
    )
    rows = [{"day": d, "bot": b, "label": label, "hits": n} for (d, b, label), n in counts.items()]
    await conn.execute(stmt, rows)


class DatabaseWriter:
    """The embedded mode's writer: batches go straight to the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(self, batch: Batch) -> int:
        return await write_batch(self.engine, batch)

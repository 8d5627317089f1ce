"""Storing as the tests need it: a batch written (as the worker or the embedded writer does),
then what it queued derived into facts at once (as the deriver would, a moment later), so a test
that reads fact rows right after writing sees them."""

from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.storage.facts import derive_marked
from trackside.storage.tables import FACT_SUM_DAYS, FACT_SUM_WHO, FACT_SUMS, FACT_TABLES
from trackside.storage.writes import DEFAULT_DERIVATION
from trackside.storage.writes import write_batch as store_batch


async def write_batch(engine: AsyncEngine, batch: Batch, derivation: Derivation | None = None) -> int:
    stored = await store_batch(engine, batch)
    await derive_marked(engine, derivation or DEFAULT_DERIVATION)
    return stored


async def delete_facts(conn: AsyncConnection, day: date | None = None) -> None:
    """Every fact row (of `day`, or all) gone, with the page-view sums kept beside them: the state
    before facts existed (the upgrade), which the tests then mark for derivation."""
    for table in (*FACT_TABLES, FACT_SUM_DAYS, FACT_SUMS, FACT_SUM_WHO):
        stmt = table.delete()
        await conn.execute(stmt if day is None else stmt.where(table.c.day == day))

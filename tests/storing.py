"""Storing as the tests need it: a batch written (as the worker or the embedded writer does),
then what it queued derived into facts at once (as the deriver would, a moment later), so a test
that reads fact rows right after writing sees them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.storage.facts import derive_marked
from trackside.storage.writes import DEFAULT_DERIVATION
from trackside.storage.writes import write_batch as store_batch


async def write_batch(engine: AsyncEngine, batch: Batch, derivation: Derivation | None = None) -> int:
    stored = await store_batch(engine, batch)
    await derive_marked(engine, derivation or DEFAULT_DERIVATION)
    return stored

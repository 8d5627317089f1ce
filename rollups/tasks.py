"""The worker's jobs: thin glue around the core (storage, rollup, pruning)."""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry
from sqlalchemy.exc import DBAPIError, OperationalError

from trackside.derive import derivation_of
from trackside.queue import unpack_batch
from trackside.rollup import prune, rollup_pending
from trackside.storage.salts import DatabaseSalts
from trackside.storage.writes import write_batch

logger = logging.getLogger("trackside.worker")

# The database being away is worth waiting for; anything else is a bug and fails loudly.
_TRANSIENT = (OSError, TimeoutError, OperationalError, DBAPIError, ConnectionError)


# Retries of a batch while the database is away: 2 s, 4 s, ... up to this, for as long as it takes.
RETRY_CAP = 30


def _database_away(ctx: dict[str, Any], exc: BaseException) -> None:
    health = ctx.get("health")
    if health is not None:
        health.database_away(exc)  # one line when it goes away, one when it is back
    else:
        logger.warning("database unavailable (%s)", type(exc).__name__)


def _database_ok(ctx: dict[str, Any]) -> None:
    health = ctx.get("health")
    if health is not None:
        health.database_ok()


async def persist_batch(ctx: dict[str, Any], wire: dict[str, Any] | bytes) -> int:
    """Store one batch of events: insert-or-ignore on each event id, so a retry never counts twice."""
    batch = unpack_batch(wire)
    try:
        stored = await write_batch(ctx["engine"], batch, derivation_of(ctx["settings"]))
    except _TRANSIENT as exc:
        _database_away(ctx, exc)
        raise Retry(defer=min(RETRY_CAP, 2 * ctx.get("job_try", 1))) from exc
    _database_ok(ctx)
    return stored


async def rollup_closed_days(ctx: dict[str, Any]) -> int:
    settings = ctx["settings"]
    try:
        results = await rollup_pending(
            ctx["engine"], settings.view_window_minutes * 60.0, derivation=derivation_of(settings)
        )
    except _TRANSIENT as exc:  # the next run (every half hour) goes on where this one stopped
        _database_away(ctx, exc)
        return 0
    _database_ok(ctx)
    return sum(1 for r in results if not r.skipped)


async def prune_old(ctx: dict[str, Any]) -> dict[str, int]:
    settings = ctx["settings"]
    try:
        result = await prune(
            ctx["engine"],
            settings.raw_retention_days,
            settings.daily_retention_days,
            fact_retention_days=settings.fact_retention_days,
        )
        salts = await DatabaseSalts(ctx["engine"]).prune()
    except _TRANSIENT as exc:
        _database_away(ctx, exc)
        return {}
    _database_ok(ctx)
    return {
        "raw_events": result.raw_events,
        "daily_rows": result.daily_rows,
        "fact_rows": result.fact_rows,
        "salts": salts,
    }

"""Rollups and pruning: closed UTC days, one transaction per day under that day's lock.

Rerunning a day replaces its rows (never adds to them), so a rerun, two workers at once, or a late
event that marked its day dirty all end in the same rows as one clean run. A day whose raw events
are pruned is never rolled again (it would be rolled from what is left, wiping it): a late event
for it only adds to its additive counts (`trackside.storage.daily.add_late`)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from trackside.aggregate import aggregate_day
from trackside.storage.daily import (
    clear_dirty,
    day_bot_hits,
    days_needing_rollup,
    lock_day,
    prune_daily,
    prune_raw,
    replace_day,
)
from trackside.storage.fact_retention import prune_facts
from trackside.storage.reads import day_events
from trackside.views import derive_day

logger = logging.getLogger("trackside.rollup")


class DayPruned(Exception):
    """A day whose raw events are pruned cannot be rolled up again."""

    def __init__(self, day: date) -> None:
        super().__init__(
            f"{day} cannot be rolled up again: its raw events were pruned (TRACKSIDE_RAW_RETENTION_DAYS), "
            "so a rollup would replace its daily rows with figures from whatever is left; its rows stay as they are"
        )
        self.day = day


@dataclass(frozen=True, slots=True)
class RollupResult:
    day: date
    events: int
    skipped: bool  # already rolled and clean: nothing to do


def utc_today() -> date:
    return datetime.now(UTC).date()


async def rollup_day(engine: AsyncEngine, day: date, window_seconds: float, *, force: bool = False) -> RollupResult:
    """Roll up one day: derive its views from raw events and replace its daily rows. A day whose
    raw events are pruned is skipped (`force`: refused, `DayPruned`)."""
    async with engine.begin() as conn:
        dirty, rolled_at, pruned = await lock_day(conn, day)
        if pruned:
            if force:
                raise DayPruned(day)
            if dirty:
                await clear_dirty(conn, day)
            return RollupResult(day, 0, True)
        if rolled_at is not None and not dirty and not force:
            return RollupResult(day, 0, True)
        # A day is millions of small objects that all live until the end: the garbage collector
        # would walk them again and again for nothing (a third of the time, measured).
        gc.disable()
        try:
            events = await day_events(conn, day)
            site = aggregate_day(day, events, derive_day(events, window_seconds), await day_bot_hits(conn, day))
            del events
        finally:
            gc.enable()
        await replace_day(conn, site, site.raw_events)
    logger.info("rolled up %s: %d events", day, site.raw_events)
    return RollupResult(day, site.raw_events, False)


async def pending_days(engine: AsyncEngine, today: date | None = None) -> list[date]:
    async with engine.connect() as conn:
        return await days_needing_rollup(conn, today or utc_today())


async def rollup_pending(
    engine: AsyncEngine,
    window_seconds: float,
    today: date | None = None,
    progress: Callable[[RollupResult], None] | None = None,
) -> list[RollupResult]:
    """Every closed day that has raw events not yet rolled up (never today: it is not closed)."""
    results = []
    for day in await pending_days(engine, today):
        result = await rollup_day(engine, day, window_seconds)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


@dataclass(frozen=True, slots=True)
class PruneResult:
    raw_events: int
    daily_rows: int
    fact_rows: int = 0


async def prune(
    engine: AsyncEngine,
    raw_retention_days: int,
    daily_retention_days: int,
    today: date | None = None,
    *,
    fact_retention_days: int = 90,
) -> PruneResult:
    """Raw events older than the retention, only of days rolled up and clean; then fact rows older
    than theirs, only of days whose raw events are pruned (`prune_facts`); daily rows older than
    theirs (0 keeps them forever)."""
    today = today or utc_today()
    async with engine.begin() as conn:
        raw = await prune_raw(conn, today - timedelta(days=raw_retention_days))
        facts = await prune_facts(conn, today - timedelta(days=fact_retention_days))
        daily = 0
        if daily_retention_days > 0:
            daily = await prune_daily(conn, today - timedelta(days=daily_retention_days))
    return PruneResult(raw, daily, facts)

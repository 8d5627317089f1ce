"""Rollups and pruning: closed UTC days, one transaction per day under that day's lock.

A rollup groups the day's fact rows in the database (`trackside.storage.fact_reads`) into its daily
rows: only grouped rows come back to Python, never the day's events or facts, so its memory stays
the same however big the day. Once rolled, a day's figures are its daily rows alone.

Rerunning a day replaces its rows (never adds to them), so a rerun, two workers at once, or a late
event that marked its day dirty all end in the same rows as one clean run. A day whose raw events
are pruned is never rolled again (it would be rolled from what is left, wiping it): a late event
for it only adds to its additive counts (`trackside.storage.daily.add_late`).

A rolled day's page-view sums (`trackside.storage.day_sums`) are kept as long as its raw events:
late events derived into its facts move them, and its next rollup reads them instead of grouping
every page view again. Its figures are still its daily rows while it is clean."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.derive import Derivation
from trackside.storage import day_sums, item_sums
from trackside.storage.daily import (
    clear_dirty,
    days_needing_rollup,
    insert_items,
    lock_day,
    prune_daily,
    prune_raw,
    replace_day,
)
from trackside.storage.engine import planner_off
from trackside.storage.fact_reads import (
    item_dims,
    item_totals,
    item_user_sketches,
    raw_event_count,
    read_site,
    users_sketch,
)
from trackside.storage.fact_retention import prune_facts
from trackside.storage.facts import derive_visitor_days, marked
from trackside.storage.funnel_days import record_funnel_day
from trackside.storage.journey_days import WORK_MEM, prune_journey_days, record_journey_days
from trackside.storage.label_days import prune_label_days, record_label_days
from trackside.storage.partitions import drop_empty_partitions, existing_partitions, make_partitions, partition_name
from trackside.storage.tables import EVENTS, FACT_TABLES
from trackside.storage.user_days import prune_user_days, record_user_days
from trackside.storage.visit_days import prune_visit_days, record_visit_days

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


async def rollup_day(
    engine: AsyncEngine, day: date, window_seconds: float, *, force: bool = False, derivation: Derivation | None = None
) -> RollupResult:
    """Roll up one day: derive its visitor-days still marked, group its facts and replace its daily
    rows. A day whose raw events are pruned is skipped (`force`: refused, `DayPruned`).

    `derivation`: the settings' (`derivation_of`), which facts are derived with at ingest; without
    it, marked visitor-days are derived with `window_seconds` and raw paths."""
    # Each piece's seconds, logged: what a big day's rollup spends its time on (bench/facts_bench.py).
    spent: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(piece: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        spent[piece] = spent.get(piece, 0.0) + now - mark
        mark = now

    derivation = derivation or Derivation(window_seconds=window_seconds)
    if engine.dialect.name == "postgresql":
        # Late events' visitor-days derived and committed first, as the deriver would: then the pieces
        # below can run apart (they must see the facts committed). Any marked in between are derived in
        # the rollup's transaction, as on SQLite.
        await _derive_marked_day(engine, day, derivation, force)
        lap("derive_first")
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
        lap("locked")
        # Visitor-days whose events were stored before facts existed, or late: derived first, in this
        # transaction (under the day's lock: a second worker waits and then finds none). They move
        # the day's sums (kept until its raw events are pruned), so every mark of the day is locked
        # first, in order: a deriver holding one of them never waits on a sum row moved here.
        derived = await _derive_marked(conn, day, derivation)
        lap("derive")
        # The visits' daily rows and the funnels' encoding (together 30 s of a 10M-event day's 60, the
        # encoding mostly Python) are made beside the other pieces, in a transaction of their own on a
        # second connection, where they see the same facts: on PostgreSQL, when nothing was derived above
        # (facts this transaction has not committed). The day's facts stay as they are meanwhile: no
        # deriver can take a mark of the day (all locked above), and no mark is made while this
        # transaction holds the day's lock. Their rows commit just before ours; were ours to fail then,
        # they still hold what the day's facts make (each set of rows is whole: v2 and funnels read a
        # day's rows where they are, its facts where not), and the next rollup replaces them.
        apart = conn.dialect.name == "postgresql" and not derived
        beside = asyncio.create_task(_apart(engine, day)) if apart else None
        try:
            events = await _pieces(conn, day, force, lap)
            if beside is None:
                await _pieces_apart(conn, day, lap)
            else:
                spent.update((f"{piece}_apart", seconds) for piece, seconds in (await beside).items())
                lap("apart_wait")
        except BaseException:
            if beside is not None:
                beside.cancel()  # nothing if it is done
                await asyncio.gather(beside, return_exceptions=True)
            raise
    lap("commit")
    logger.info(
        "rolled up %s: %d events in %.2f s (%s)",
        day,
        events,
        sum(v for piece, v in spent.items() if not piece.endswith("_apart")),
        ", ".join(f"{k} {v:.2f} s" for k, v in spent.items()),
    )
    return RollupResult(day, events, False)


async def _derive_marked(conn: AsyncConnection, day: date, derivation: Derivation) -> bool:
    """Derive the day's marked visitor-days, every mark of the day locked first; whether there were any."""
    await lock_marks_of(conn, day)
    derived = False
    while keys := await marked(conn, day):
        await derive_visitor_days(conn, keys, derivation)
        derived = True
    return derived


async def _derive_marked_day(engine: AsyncEngine, day: date, derivation: Derivation, force: bool) -> None:
    """The day's marked visitor-days derived in a transaction of their own, under the day's lock,
    unless the rollup would skip the day."""
    async with engine.begin() as conn:
        dirty, rolled_at, pruned = await lock_day(conn, day)
        if not pruned and (rolled_at is None or dirty or force):
            await _derive_marked(conn, day, derivation)


async def _apart(engine: AsyncEngine, day: date) -> dict[str, float]:
    """`_pieces_apart` in a transaction of its own (`rollup_day`); each piece's seconds."""
    spent: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(piece: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        spent[piece] = now - mark
        mark = now

    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM}'")
        lap("begin")
        await _pieces_apart(conn, day, lap)
    return spent


async def _pieces_apart(conn: AsyncConnection, day: date, lap: Callable[[str], None]) -> None:
    """The pieces a PostgreSQL rollup makes on a second connection: the visits' daily rows (read by v2
    for rolled days) and the funnels' encoding of the day's visits (matched with NumPy over closed days)."""
    await record_visit_days(conn, day)
    lap("visit_days")
    await record_funnel_day(conn, day)
    lap("funnel_encoding")


async def _pieces(conn: AsyncConnection, day: date, force: bool, lap: Callable[[str], None]) -> int:
    """The rollup's pieces always made in its own transaction: the day's daily rows and its users' days,
    then the journeys' and route labels' daily rows. Returns the day's raw event count."""
    # The page views' sums derivation keeps of the day (moved by the rollup's own derivation too,
    # read after it): its breakdowns, exactly, without grouping every page view again (most of a big
    # day's grouping; again when late events made it dirty). `force`, the operator's repair,
    # groups the facts whatever the sums say.
    sums = None if force else await day_sums.read(conn, day, with_users=False)
    events = int((await conn.execute(raw_event_count(day))).scalar_one())
    if conn.dialect.name == "postgresql":
        # The groupings' hash aggregates of a big day mostly in memory (for this transaction only;
        # `record_journey_days` sets the same for its own).
        await conn.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM}'")
    # Hashed, not sorted, not compiled, no nested loops: the day's facts were just derived, so the
    # planner's statistics do not know them (`planner_off`). A 1.43M-event day's groupings: 14.5 -> 6.4 s.
    async with planner_off(conn, "enable_sort", "enable_nestloop", "jit"):
        site = await read_site(conn, day, with_users=False, sums=sums)
        site.users_sketch = await users_sketch(conn, day)
        await replace_day(conn, site, events)
        if sums is not None:  # the items' sums follow the same days (`item_sums`)
            await insert_items(
                conn,
                day,
                item_sums.rollup_totals(day),
                item_sums.rollup_dims(day),
                item_sums.rollup_sketches(conn, day),
            )
        else:
            await insert_items(conn, day, item_totals(day), item_dims(day), item_user_sketches(conn, day))
    await record_user_days(conn, day)
    lap("grouping")
    # Journeys' daily rows (passages by neighbouring page), from the day's page view facts.
    await record_journey_days(conn, day)
    lap("journeys")
    # Route labels' daily rows (the top pages panel), read by v2 for rolled days.
    await record_label_days(conn, day)
    lap("label_days")
    return events


async def lock_marks_of(conn: AsyncConnection, day: date) -> None:
    """Lock every derive mark of the day (PostgreSQL; SQLite has one writer), in the order derivers
    lock theirs (`facts._lock_marks`): the rollup's derivation takes them in rounds and moves the
    day's sums at the end of each; a deriver holding a later round's mark while it waits for a sum
    row the first round moved would wait on it in a cycle. No mark of the day is made meanwhile:
    ingest of an event of the day waits for the day's lock (`mark_dirty`)."""
    if conn.dialect.name != "postgresql":
        return
    # Counted, not fetched: a day stored before facts existed has every visitor-day marked.
    await conn.exec_driver_sql(
        "SELECT count(*) FROM (SELECT 1 FROM derive_marks WHERE day = $1 ORDER BY visitor FOR UPDATE) AS m", (day,)
    )


async def pending_days(engine: AsyncEngine, today: date | None = None) -> list[date]:
    async with engine.connect() as conn:
        return await days_needing_rollup(conn, today or utc_today())


async def rollup_pending(
    engine: AsyncEngine,
    window_seconds: float,
    today: date | None = None,
    progress: Callable[[RollupResult], None] | None = None,
    derivation: Derivation | None = None,
) -> list[RollupResult]:
    """Every closed day that has raw events not yet rolled up (never today: it is not closed)."""
    results = []
    for day in await pending_days(engine, today):
        result = await rollup_day(engine, day, window_seconds, derivation=derivation)
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
        # The sums derivation keeps of a rolled day serve its rollups again (late events): gone with
        # its raw events, as it cannot be rolled again then (`DayPruned`).
        await day_sums.drop_raw_pruned(conn)
        facts = await prune_facts(conn, today - timedelta(days=fact_retention_days))
        await prune_visit_days(conn, today - timedelta(days=fact_retention_days))  # with their visit facts
        await prune_label_days(conn, today - timedelta(days=fact_retention_days))  # with their page view facts
        daily = 0
        if daily_retention_days > 0:
            daily = await prune_daily(conn, today - timedelta(days=daily_retention_days))
            # Signed-in users' active days (retention), with the daily rows: not counted among them.
            await prune_user_days(conn, today - timedelta(days=daily_retention_days))
            await prune_journey_days(conn, today - timedelta(days=daily_retention_days))
    if engine.dialect.name == "postgresql":
        # Day partitions: the next days' made ahead, the pruned days' dropped (their rows are gone).
        made = await make_partitions(engine, today)
        await drop_empty_partitions(engine, today - timedelta(days=fact_retention_days))
        # Fresh planner statistics for the fact tables, whether or not autovacuum runs: with none,
        # PostgreSQL takes a growing table for a small one and derivation's deletes scan it whole.
        # The partitions written to (today's, yesterday's, the default one) at every prune; the whole
        # tables (which analyzes every day's partition: 17 s and more of a month of 1M page views a
        # day, beside the readers, at every sidecar start) once a day, when the next day's are made.
        analyzed = [t.name for t in (*FACT_TABLES, EVENTS)]
        existing = await existing_partitions(engine) if not made else set()
        if existing:  # (none: tables not partitioned, analyzed whole)
            analyzed = [
                name
                for t in FACT_TABLES
                for name in (partition_name(t.name, today), partition_name(t.name, today - timedelta(days=1)),
                             f"{t.name}_default")
                if name in existing
            ]  # fmt: skip
            analyzed.append(EVENTS.name)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE " + ", ".join(analyzed))
    return PruneResult(raw, daily, facts)

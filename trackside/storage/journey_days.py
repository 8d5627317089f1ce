"""Journeys' daily rows (`journey_days`): for each closed day and route label, its passages (page
views) and distinct visits by the route label of the page before it (`side` "prev") and after it
(`side` "next") in the same visit, and in all (`side` "page"). Written by the rollup of each closed
day from that day's page view facts, which carry their neighbours' labels (`prev_label`,
`next_label`); read by a journey over rolled days (`trackside.stats.journeys`), so it reads a few
rows per day instead of every page view of the range.

`neighbour` "" is no page: the chosen page opened its visit ("prev": the entry) or ended it ("next":
the exit), and is "" on the "page" rows. Visits end at midnight UTC, so a day's distinct visits add
up over days. A day's rows are replaced whole when it is rolled again; they are pruned with the
daily rows (`TRACKSIDE_DAILY_RETENTION_DAYS`), so they reach past the facts' retention."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.tables import FACT_PAGE_VIEWS, JOURNEY_DAYS

PREV = "prev"
NEXT = "next"
PAGE = "page"
# PostgreSQL's work_mem in a rollup's transaction (`trackside.rollup.rollup_day`, and here). Each hash
# aggregate may take twice it (hash_mem_multiplier), a statement several, and the backend keeps what
# its statements took. A 10M-event day's rollup (facts_bench --reuse, the backend's own memory at its
# peak): 64MB 395 MB, 32MB 209, 16MB 148, 8MB 104; no slower at 16MB than at 64MB, rolled again from
# the sums (76.7 against 76.3-81.7 s) or forced to group every fact (95.7 against 109.5 s).
WORK_MEM = "16MB"
NONE = ""  # no neighbour: the entry (prev), the exit (next); and the totals' rows (page)

COLUMNS = ("day", "label", "side", "neighbour", "passages", "visits")


def day_select(day: date | None = None) -> sa.Select[Any]:
    """The rows of one day (or, `day` None, of every day the facts hold), grouped by the database
    from the page view facts: (day, label, side, neighbour, passages, visits).

    Distinct visits counted in two steps (per visit, then per neighbour): hash aggregates, where
    COUNT(DISTINCT) would sort the day's page views three times."""
    pv = FACT_PAGE_VIEWS.c
    where = [] if day is None else [pv.day == day]

    def side(name: str, column: Any | None) -> sa.Select[Any]:
        neighbour = sa.literal(NONE, sa.String) if column is None else sa.func.coalesce(column, NONE)
        keys = [pv.day, pv.label] + ([] if column is None else [neighbour])
        per_visit = (
            sa.select(*keys[:2], neighbour.label("neighbour"), pv.visit_id, sa.func.count().label("n"))
            .where(*where)
            .group_by(*keys, pv.visit_id)
            .subquery(f"{name}_visits")
        )
        c = per_visit.c
        return sa.select(
            c.day,
            c.label,
            sa.literal(name, sa.String).label("side"),
            c.neighbour,
            sa.func.sum(c.n).label("passages"),
            sa.func.count().label("visits"),
        ).group_by(c.day, c.label, c.neighbour)

    return sa.union_all(side(PREV, pv.prev_label), side(NEXT, pv.next_label), side(PAGE, None))  # type: ignore[return-value]


async def record_journey_days(conn: AsyncConnection, day: date) -> None:
    """Replace the day's rows with those its page view facts make (the rollup, under the day's lock)."""
    await conn.execute(sa.delete(JOURNEY_DAYS).where(JOURNEY_DAYS.c.day == day))
    if conn.dialect.name == "postgresql":
        # The per-visit hash aggregates of a busy day (a million page views: some 130 MB) mostly in memory,
        # not spilled to disk (measured 12 s instead of 22 s at 256MB); for the rest of the transaction only.
        await conn.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM}'")
    await conn.execute(JOURNEY_DAYS.insert().from_select(list(COLUMNS), day_select(day)))


async def prune_journey_days(conn: AsyncConnection, before: date) -> int:
    result = await conn.execute(sa.delete(JOURNEY_DAYS).where(JOURNEY_DAYS.c.day < before))
    return max(result.rowcount, 0)


def label_select(label: str, days: Iterable[date]) -> sa.Select[Any]:
    """(side, neighbour, passages, visits) of a route label summed over `days` (rolled days)."""
    j = JOURNEY_DAYS.c
    return (
        sa.select(j.side, j.neighbour, sa.func.sum(j.passages).label("passages"), sa.func.sum(j.visits).label("visits"))
        .where(j.label == label, j.day.in_(sorted(days)))
        .group_by(j.side, j.neighbour)
    )

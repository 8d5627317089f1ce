"""Route labels' daily rows (`label_days`, `label_users`): for each closed day and route label, the
figures v2 counts of the day's page views and site events (`kind` "event") by `event:props:label`:
page views, events, the visits holding them, time on page and scroll depth (sums and counts), the
day's distinct anonymous visitors, and the signed-in visitors as rows of their own. Written by the
rollup of each closed day from its facts; read by v2 for rolled days when a query asks for
`event:props:label` alone without filters over whole days (the dashboard's top pages panel:
`trackside.stats.v2.sql.Builder.label_row_plan`), so that a month's panel reads a few hundred rows a
day instead of every page view of the range.

Exact over any range of days, as the visits' rows (`trackside.storage.visit_days`): a visit ends at
midnight UTC (its id is unique, so its day's distinct visits add up) and an anonymous id changes
every day, so every figure but the signed-in visitors adds up over days; those are counted distinct
over the range's rows. A day's rows are replaced whole when it is rolled again; every rolled day
has a marker row (label "", which no route label is), so the days read from here are those with it,
rolled and clean (`days_with_rows`). Rows of days whose page view facts are pruned go with them."""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.engine import planner_off
from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_SITE_EVENTS, ROLLUP_DAYS

_metadata = sa.MetaData()

LABEL_DAYS = sa.Table(
    "label_days",
    _metadata,
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("label", sa.String(128), primary_key=True),
    sa.Column("page_views", sa.BigInteger(), nullable=False),
    sa.Column("events", sa.BigInteger(), nullable=False),
    sa.Column("visits", sa.BigInteger(), nullable=False),
    sa.Column("time_on_page_sum", sa.BigInteger(), nullable=False),
    sa.Column("time_on_page_count", sa.BigInteger(), nullable=False),
    sa.Column("scroll_sum", sa.BigInteger(), nullable=False),
    sa.Column("scroll_count", sa.BigInteger(), nullable=False),
    sa.Column("anon_visitors", sa.BigInteger(), nullable=False),
)

LABEL_USERS = sa.Table(
    "label_users",
    _metadata,
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("label", sa.String(128), primary_key=True),
    sa.Column("who", sa.String(66), primary_key=True),
)

MARKER = ""  # the label of the row every rolled day has (no route label is empty)
FIGURES = (
    "page_views", "events", "visits", "time_on_page_sum", "time_on_page_count", "scroll_sum", "scroll_count",
    "anon_visitors",
)  # fmt: skip


def _events(day: date) -> sa.Subquery:
    """The day's page views and site events, as v2's events (`Builder.events`)."""
    pv, se = FACT_PAGE_VIEWS.c, FACT_SITE_EVENTS.c
    pages = sa.select(
        pv.label, pv.who, pv.visit_id, sa.literal(1).label("is_page"), pv.time_on_page_ms, pv.scroll_depth
    ).where(pv.day == day)
    events = sa.select(
        se.label, se.who, se.visit_id, sa.literal(0).label("is_page"),
        sa.cast(sa.null(), sa.BigInteger).label("time_on_page_ms"),
        sa.cast(sa.null(), sa.SmallInteger).label("scroll_depth"),
    ).where(se.day == day, se.kind == "event")  # fmt: skip
    return sa.union_all(pages, events).subquery("e")


def _sums_select(day: date) -> sa.Select[Any]:
    """Per label, its figures. Grouped per visit and per visitor apart, then per label: two hash
    aggregates, where COUNT(DISTINCT visit_id) and COUNT(DISTINCT anonymous who) sorted the day's page
    views once per label group (about 4 s of a 5M-event day's rollup). A visit's rows can carry two `who`s
    (a page view before signing in), so the visits are counted by their ids, the visitors by theirs."""
    e = _events(day)
    per_visit = (
        sa.select(
            e.c.label,
            e.c.visit_id,
            sa.func.sum(e.c.is_page).label("page_views"),
            sa.func.count().label("events"),
            sa.func.sum(e.c.time_on_page_ms).label("top_sum"),
            sa.func.count(e.c.time_on_page_ms).label("top_count"),
            sa.func.sum(e.c.scroll_depth).label("scroll_sum"),
            sa.func.count(e.c.scroll_depth).label("scroll_count"),
        )
        .group_by(e.c.label, e.c.visit_id)
        .subquery("per_visit")
    )
    e2 = _events(day)
    per_who = (
        sa.select(e2.c.label, e2.c.who)
        .where(sa.not_(e2.c.who.like("u:%")))
        .group_by(e2.c.label, e2.c.who)
        .subquery("per_who")
    )
    zero = sa.literal(0, sa.BigInteger)
    v = per_visit.c
    parts = sa.union_all(
        sa.select(
            v.label.label("label"),
            sa.func.sum(v.page_views).label("page_views"),
            sa.func.sum(v.events).label("events"),
            sa.func.count(v.visit_id).label("visits"),
            sa.func.sum(v.top_sum).label("top_sum"),
            sa.func.sum(v.top_count).label("top_count"),
            sa.func.sum(v.scroll_sum).label("scroll_sum"),
            sa.func.sum(v.scroll_count).label("scroll_count"),
            zero.label("anon"),
        ).group_by(v.label),
        sa.select(per_who.c.label, zero, zero, zero, zero, zero, zero, zero, sa.func.count()).group_by(per_who.c.label),
    ).subquery("parts")
    p = parts.c
    return sa.select(
        sa.literal(day, sa.Date).label("day"),
        p.label,
        sa.func.coalesce(sa.func.sum(p.page_views), 0),
        sa.func.coalesce(sa.func.sum(p.events), 0),
        sa.func.coalesce(sa.func.sum(p.visits), 0),
        sa.func.coalesce(sa.func.sum(p.top_sum), 0),
        sa.func.coalesce(sa.func.sum(p.top_count), 0),
        sa.func.coalesce(sa.func.sum(p.scroll_sum), 0),
        sa.func.coalesce(sa.func.sum(p.scroll_count), 0),
        sa.func.coalesce(sa.func.sum(p.anon), 0),
    ).group_by(p.label)


def _users_select(day: date) -> sa.Select[Any]:
    e = _events(day)
    return sa.select(sa.literal(day, sa.Date).label("day"), e.c.label, e.c.who).where(e.c.who.like("u:%")).distinct()


def fill_statements(day: date) -> list[sa.Executable]:
    """The statements that replace the day's rows with those its facts make (the rollup's, and the
    migration's for days rolled before it)."""
    marker = sa.select(
        sa.literal(day, sa.Date), sa.literal(MARKER, sa.String), *(sa.literal(0, sa.BigInteger) for _ in FIGURES)
    ).where(~sa.exists().where(LABEL_DAYS.c.day == day, LABEL_DAYS.c.label == MARKER))
    return [
        sa.delete(LABEL_DAYS).where(LABEL_DAYS.c.day == day),
        sa.delete(LABEL_USERS).where(LABEL_USERS.c.day == day),
        LABEL_DAYS.insert().from_select(["day", "label", *FIGURES], _sums_select(day)),
        LABEL_USERS.insert().from_select(["day", "label", "who"], _users_select(day)),
        LABEL_DAYS.insert().from_select(["day", "label", *FIGURES], marker),
    ]


async def record_label_days(conn: AsyncConnection, day: date) -> None:
    """Replace the day's rows with those its facts make (the rollup, under the day's lock)."""
    # Hashed, not sorted, not compiled: the day's facts are new to the planner (`planner_off`).
    async with planner_off(conn, "enable_sort", "jit"):
        for statement in fill_statements(day):
            await conn.execute(statement)


async def prune_label_days(conn: AsyncConnection, before: date) -> int:
    """Delete the rows of days before `before` whose page view facts are gone (pruned): v2 never reads
    a day the facts do not hold."""
    kept = sa.select(FACT_PAGE_VIEWS.c.day).where(FACT_PAGE_VIEWS.c.day < before).distinct()
    removed = 0
    for table in (LABEL_DAYS, LABEL_USERS):
        result = await conn.execute(sa.delete(table).where(table.c.day < before, table.c.day.not_in(kept)))
        removed += max(result.rowcount, 0)
    return removed


async def days_with_rows(conn: AsyncConnection, first: date, last: date) -> list[date]:
    """The days in [first, last] read from these rows: rolled and clean, with their rows written."""
    r, d = LABEL_DAYS.c, ROLLUP_DAYS.c
    found = await conn.execute(
        sa.select(r.day)
        .join(ROLLUP_DAYS, d.day == r.day)
        .where(r.label == MARKER, r.day >= first, r.day <= last, d.dirty.is_(False), d.rolled_at.is_not(None))
        .order_by(r.day)
    )
    return [day if isinstance(day, date) else date.fromisoformat(str(day)[:10]) for day in found.scalars()]

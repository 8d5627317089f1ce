"""Visits' daily rows (`visit_dim_days`, `visit_dim_users`): for each closed day and visit dimension
(source, referrer, UTM source, medium and campaign, device, browser, OS, country, entry and exit
page; and "" for all of the day's visits), per value: the visits, bounces, duration, page views and
events of the visits entering with it (`page_views + events`: what v2's `events` counts of them),
the day's distinct anonymous visitors among them, and the signed-in users among them as rows of
their own. Written by the rollup of each closed day from that day's visit facts; read by v2 for
rolled days (`trackside.stats.v2.sql.Builder.visit_event_plan`) so that a month's breakdown reads a
few rows per day instead of every visit of the range.

Exact over any range of days: visits end at midnight UTC and an anonymous visitor's id changes with
the daily salt, so visits, sums and anonymous visitor-days add up over days; a signed-in user counts
once over the range, so the users are kept per day and value (few: the site's signed-in visitors)
and counted distinct over the range's rows. The visitors of a visit are its `who` and, for a
signed-in visit, the other `who`s of its page views and site events (a page view before signing in):
the same as `visit_event_plan` counts from facts.

A day's rows are replaced whole when it is rolled again. Every rolled day has its totals' row
(dimension "", even with no visit): the days v2 reads from here are those with it, rolled and
clean (`days_with_rows`). Rows of days whose visit facts are pruned are deleted with them
(`prune_visit_days`): v2 reads only the facts' days."""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from trackside.stats.v2.labels import DEVICES, DIRECT, NOT_SET
from trackside.stats.v2.schema import VISIT_DIMENSIONS
from trackside.storage.engine import planner_off
from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_SITE_EVENTS, FACT_VISITS, ROLLUP_DAYS

Expr = ColumnElement[Any]

_metadata = sa.MetaData()

VISIT_DIM_DAYS = sa.Table(
    "visit_dim_days",
    _metadata,
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("dim", sa.String(24), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    sa.Column("visits", sa.BigInteger(), nullable=False),
    sa.Column("bounces", sa.BigInteger(), nullable=False),
    sa.Column("duration", sa.BigInteger(), nullable=False),
    sa.Column("page_views", sa.BigInteger(), nullable=False),
    sa.Column("events", sa.BigInteger(), nullable=False),
    sa.Column("anon_visitors", sa.BigInteger(), nullable=False),
)

VISIT_DIM_USERS = sa.Table(
    "visit_dim_users",
    _metadata,
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("dim", sa.String(24), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    sa.Column("who", sa.String(66), primary_key=True),
)

TOTAL = ""  # the dimension (and value) of the day's totals
# The dimensions kept: the day's totals and every visit dimension but `visit:country_name`, which is
# read from `visit:country`'s rows (codes).
ROW_DIMENSIONS = (TOTAL, *(d for d in VISIT_DIMENSIONS if d != "visit:country_name"))


def row_dimension(dim: str) -> str:
    """The dimension whose rows answer `dim` (a visit dimension, or "" for none)."""
    return "visit:country" if dim == "visit:country_name" else dim


def visit_value(v: Any, dim: str) -> Expr | None:
    """A visit's value of a visit dimension as v2 answers it (its grouping column), `v` the visits
    (or an alias); None for any other dimension. `visit:country_name` groups by the country code."""
    if dim in ("visit:source", "visit:referrer"):
        return sa.func.coalesce(v.c[dim[6:]], DIRECT)
    if dim in ("visit:utm_source", "visit:utm_medium", "visit:utm_campaign", "visit:entry_page", "visit:exit_page"):
        return sa.func.coalesce(v.c[dim[6:]], NOT_SET)
    if dim in ("visit:country", "visit:country_name"):
        return sa.func.coalesce(v.c.country, NOT_SET)
    if dim == "visit:device":
        return sa.case(*((v.c.device == raw, spelled) for raw, spelled in DEVICES.items()), else_=v.c.device)
    if dim in ("visit:browser", "visit:os"):
        return v.c[dim[6:]]
    return None


# The visit columns a dimension's value is made of (`visit_value`).
_VALUE_COLUMNS = (
    "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "entry_page", "exit_page",
    "country", "device", "browser", "os",
)  # fmt: skip


def _rows(day: date, *, users_only: bool = False) -> list[sa.Select[Any]]:
    """The rows to count (`_keyed`): one per visit of the day (its figures, its `who`) and one per other
    `who` of a signed-in visit's page views and site events (figures 0). `users_only`: those of
    signed-in visitors alone (`who` "u:...")."""
    v = FACT_VISITS.alias("v")
    values = [v.c[name] for name in _VALUE_COLUMNS]
    mine = [v.c.who.like("u:%")] if users_only else []
    parts: list[sa.Select[Any]] = [
        sa.select(
            *values,
            v.c.who.label("who"),
            sa.literal(1).label("n"),
            sa.case((v.c.bounce, 1), else_=0).label("b"),
            v.c.duration_s.label("s"),
            v.c.page_views.label("pv"),
            (v.c.page_views + v.c.events).label("ev"),
        ).where(v.c.day == day, *mine)
    ]
    for table in (FACT_PAGE_VIEWS, FACT_SITE_EVENTS):
        t = table.alias("o")
        extra = [t.c.kind == "event"] if table is FACT_SITE_EVENTS else []
        if users_only:
            extra.append(t.c.who.like("u:%"))
        on = sa.and_(t.c.day == v.c.day, t.c.visitor == v.c.visitor, t.c.visit_id == v.c.id)
        zero = sa.literal(0)
        parts.append(
            sa.select(*values, t.c.who.label("who"), *(zero.label(n) for n in ("n", "b", "s", "pv", "ev")))
            .select_from(v.join(t, on))
            .where(v.c.day == day, t.c.day == day, v.c.user_id.is_not(None), t.c.who != v.c.who, *extra)
        )
    return parts


def _keyed(rows: Any, *columns: str) -> sa.Subquery:
    """Per dimension and value, each of `rows` (a subquery of `_rows`' columns) once: each row repeated
    for every dimension, with `columns` of its own.

    The visits and their other `who`s are read once (one join per table), then repeated: a union per
    dimension joined the visits to the page views twelve times, and a day whose facts the planner has
    no statistics for yet (the rollup derives and reads them in one transaction) made each join a nested
    loop over the whole day: 124 s for a day of 9,213 visits."""
    dims = sa.union_all(*(sa.select(sa.literal(dim, sa.String).label("dim")) for dim in ROW_DIMENSIONS)).subquery("d")
    value = sa.case(
        *(
            (dims.c.dim == dim, sa.literal(TOTAL, sa.String) if dim == TOTAL else visit_value(rows, dim))
            for dim in ROW_DIMENSIONS
        )
    )
    return (
        sa.select(dims.c.dim, value.label("value"), *(rows.c[name] for name in columns))
        .select_from(rows.join(dims, sa.true()))
        .subquery("k")
    )


def _sums_select(day: date) -> sa.Select[Any]:
    r = sa.union_all(*_rows(day)).cte("r")
    # The anonymous visitors of a value are its distinct anonymous `who`s. Most `who`s are one row of
    # the day (one visit): each such row is a visitor of its own, counted as a row (`a`); only the `who`s
    # of several rows (`m`) are grouped per value and `who` (`g`). Grouping every row per dimension,
    # value and `who` hashed a group per visit and dimension (some 11M at 10M events), spilling to disk.
    m = sa.select(r.c.who).group_by(r.c.who).having(sa.func.count() > 1).subquery("m")
    f = (
        sa.select(
            *r.c,
            sa.case((m.c.who.is_not(None), r.c.who)).label("g"),
            sa.case((r.c.who.like("u:%"), 0), else_=1).label("a"),
        )
        .select_from(r.outerjoin(m, m.c.who == r.c.who))
        .cte("f")
    )
    figures = ("n", "b", "s", "pv", "ev", "a")
    # Every row once per dimension, grouped by (dimension, value, `g`) in one aggregation: its groups one
    # per value and one per value and `who` of several rows. One hash table: grouped apart per dimension
    # (a union of twelve aggregations) the backend of a 10M-event day's rollup grew to 1,238 MB, not 593.
    k = _keyed(f, "g", *figures)
    w = (
        sa.select(k.c.dim, k.c.value, k.c.g, *(sa.func.sum(k.c[name]).label(name) for name in figures))
        .group_by(k.c.dim, k.c.value, k.c.g)
        .subquery("w")
        .c
    )
    return sa.select(
        sa.literal(day, sa.Date).label("day"),
        w.dim,
        w.value,
        sa.func.sum(w.n).label("visits"),
        sa.func.sum(w.b).label("bounces"),
        sa.func.sum(w.s).label("duration"),
        sa.func.sum(w.pv).label("page_views"),
        sa.func.sum(w.ev).label("events"),
        # a group of one-row `who`s: each anonymous one a visitor; a `who` of several rows: one
        sa.func.sum(sa.case((w.g.is_(None), w.a), (w.a > 0, 1), else_=0)).label("anon_visitors"),
    ).group_by(w.dim, w.value)


def _users_select(day: date) -> sa.Select[Any]:
    k = _keyed(sa.union_all(*_rows(day, users_only=True)).subquery("r"), "who")
    return sa.select(sa.literal(day, sa.Date).label("day"), k.c.dim, k.c.value, k.c.who).distinct()


SUM_COLUMNS = ("day", "dim", "value", "visits", "bounces", "duration", "page_views", "events", "anon_visitors")


def fill_statements(day: date) -> list[sa.Executable]:
    """The statements that replace the day's rows with those its visit facts make (the rollup's,
    and the migration's for days rolled before it)."""
    zeros = sa.select(
        sa.literal(day, sa.Date), sa.literal(TOTAL, sa.String), sa.literal(TOTAL, sa.String),
        *(sa.literal(0, sa.BigInteger) for _ in range(6)),
    ).where(~sa.exists().where(VISIT_DIM_DAYS.c.day == day, VISIT_DIM_DAYS.c.dim == TOTAL))  # fmt: skip
    return [
        sa.delete(VISIT_DIM_DAYS).where(VISIT_DIM_DAYS.c.day == day),
        sa.delete(VISIT_DIM_USERS).where(VISIT_DIM_USERS.c.day == day),
        VISIT_DIM_DAYS.insert().from_select(list(SUM_COLUMNS), _sums_select(day)),
        VISIT_DIM_USERS.insert().from_select(["day", "dim", "value", "who"], _users_select(day)),
        # A day without visits: its totals are zeros (every rolled day has its totals' row).
        VISIT_DIM_DAYS.insert().from_select(list(SUM_COLUMNS), zeros),
    ]


async def record_visit_days(conn: AsyncConnection, day: date) -> None:
    """Replace the day's rows with those its visit facts make (the rollup, under the day's lock)."""
    # The rollup derives the day's last facts and reads them in one transaction, before any ANALYZE
    # has seen the day: estimating it at a row or two, PostgreSQL joined the signed-in visits to the
    # day's page views by a nested loop over every page view (quadratic: 17 s for 9,213 visits of which
    # 736 signed in, where a hash join takes milliseconds). No JIT: the cost that disabling nested loops
    # adds made it compile the statement (over a second). No sort: estimating a few dozen groups, it
    # sorted a row per visit, dimension and visitor to group them (1.55M rows for 133,398 visits: 5.7 s;
    # hashed, spilling to disk at the default work_mem, 2.5 s).
    async with planner_off(conn, "enable_nestloop", "jit", "enable_sort"):
        for statement in fill_statements(day):
            await conn.execute(statement)


async def prune_visit_days(conn: AsyncConnection, before: date) -> int:
    """Delete the rows of days before `before` whose visit facts are gone (pruned): v2 never reads a
    day the facts do not hold."""
    kept = sa.select(FACT_VISITS.c.day).where(FACT_VISITS.c.day < before).distinct()
    removed = 0
    for table in (VISIT_DIM_DAYS, VISIT_DIM_USERS):
        result = await conn.execute(sa.delete(table).where(table.c.day < before, table.c.day.not_in(kept)))
        removed += max(result.rowcount, 0)
    return removed


async def days_with_rows(conn: AsyncConnection, first: date, last: date) -> list[date]:
    """The days in [first, last] read from these rows: rolled and clean, with their rows written."""
    r, d = VISIT_DIM_DAYS.c, ROLLUP_DAYS.c
    found = await conn.execute(
        sa.select(r.day)
        .join(ROLLUP_DAYS, d.day == r.day)
        .where(
            r.dim == TOTAL,
            r.value == TOTAL,
            r.day >= first,
            r.day <= last,
            d.dirty.is_(False),
            d.rolled_at.is_not(None),
        )
        .order_by(r.day)
    )
    return [day if isinstance(day, date) else date.fromisoformat(str(day)[:10]) for day in found.scalars()]

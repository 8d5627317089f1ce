"""A v2 query answered: its SELECTs run in one snapshot under a statement timeout, their groups merged
by dimension values, derived metrics (rates, percentages) computed, rows ordered and paged.

The database groups; this process only merges the groups of the sources a query names (a query
with one source has one SELECT), computes the ratios and orders the rows."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.goals import Goal
from trackside.goals import load_goals as goals_of
from trackside.stats.v2.labels import bucket, country_name, time_labels
from trackside.stats.v2.schema import (
    CONTENT_DIMENSIONS,
    EVENT_DIMENSIONS,
    VISIT_DIMENSIONS,
    Leaf,
    Query,
    V2Error,
    echo_range,
    has_goal,
    time_grain,
)
from trackside.stats.v2.sql import Builder, Plan, oldest_fact_day
from trackside.storage.engine import snapshot
from trackside.storage.label_days import days_with_rows as label_days_with_rows
from trackside.storage.visit_days import days_with_rows

Key = tuple[str, ...]
Rows = dict[Key, dict[str, float]]

MAX_TIME_LABELS = 10_000
# Metrics a visits' daily row answers part of (itself, or the visitors of a rate's whole).
VISIT_ROW_METRICS = frozenset(
    ("visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit", "percentage",
     "conversion_rate")
)  # fmt: skip
VISITORS = frozenset(("visitors",))
UNIQUES = (
    "visitors and unique_viewers: each signed-in user once over the whole range, plus each anonymous "
    "visitor once per UTC day (an anonymous id is salted anew every day, so a range's anonymous "
    "visitors are visitor-days, summed over its days; as Plausible's)"
)
PROVISIONAL = (
    "figures of the last {minutes} minutes (since provisional_since) may still change: a look's view "
    "window and a visit are still open there, so a later request can merge into them"
)
EXTENSIONS = {
    "content_views": "looks at content items (one visitor, one item, within the view window), the author's excluded",
    "unique_viewers": "distinct viewers of content, counted as visitors are",
    "impressions": "items shown in feeds, search results or widgets; the author's own left out",
    "api_calls": "requests routed to the API (counted per visitor-day: by day, week or month only)",
    "errors": "5xx answers and 404 pages",
    "bot_hits": "requests from bots, kept apart from every other figure (counted per day and route label)",
}


class QueryTimeout(Exception):
    """The database took longer than the query timeout (503)."""


@dataclass(frozen=True, slots=True)
class Limits:
    timeout_seconds: float = 10.0
    window_minutes: int = 30
    retention_days: int = 90


async def load_goals(conn: AsyncConnection, settings: Any) -> list[Goal]:
    """The site's goals: the settings' and the stored ones (`trackside.goals`)."""
    return list(await goals_of(conn, settings))


async def answer(
    engine: AsyncEngine,
    q: Query,
    limits: Limits,
    goals: Callable[[AsyncConnection], Awaitable[list[Goal]]],
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC).replace(tzinfo=None)
    async with snapshot(engine) as conn:
        async with _deadline(conn, limits.timeout_seconds):
            oldest = (await conn.execute(oldest_fact_day())).scalar()
            oldest_day = _as_date(oldest) if oldest is not None else None
            first = q.first if q.first is not None else (oldest_day or q.last)
            q = q if q.first is not None else replace(q, first=first)
            grain = time_grain(q, first)
            if q.time_labels and grain is not None:
                _check_label_count(grain, first, q)
            goal_list = await goals(conn) if has_goal(q) else []
            row_days = await _row_days(conn, q, first, grain, oldest_day)
            label_days = await _label_days(conn, q, first, grain, oldest_day)
            builder = Builder(q, first, grain, goal_list, conn.dialect.name, row_days, label_days)
            rows = await _rows(conn, builder, q, first, grain, goal_list)
    ordered = _order(q, rows)
    page = ordered[q.offset : q.offset + q.limit]
    meta: dict[str, Any] = {
        "uniques": UNIQUES,
        "provisional_since": _iso(now - timedelta(minutes=limits.window_minutes)),
        "provisional": PROVISIONAL.format(minutes=limits.window_minutes),
        "computed_at": _iso(now),
    }
    facts_begin = oldest_day or now.date() - timedelta(days=limits.retention_days - 1)
    if first < facts_begin:
        meta["facts_begin"] = facts_begin.isoformat()
        meta["facts_note"] = (
            f"figures come from facts, which begin at {facts_begin.isoformat()} "
            f"(kept {limits.retention_days} days): days before are not counted here"
        )
    if q.dimensions and "time" in q.dimensions and grain is not None:
        meta["time_dimension"] = "time:" + grain
    extensions = {m: EXTENSIONS[m] for m in q.metrics if m in EXTENSIONS}
    if extensions:
        meta["extensions"] = extensions
    if q.imports is not None:
        meta["imports_included"] = False
    if q.time_labels and grain is not None:
        meta["time_labels"] = time_labels(grain, first, q.last, q.start, q.end)
    if q.total_rows:
        meta["total_rows"] = len(ordered)
    return {
        "results": [
            {"metrics": [_metric(values, m) for m in q.metrics], "dimensions": list(key)} for key, values in page
        ],
        "meta": meta,
        "query": {
            "site_id": q.site_id,
            "metrics": list(q.metrics),
            "date_range": echo_range(q, first),
            "filters": q.raw_filters,
            "dimensions": list(q.dimensions),
            "order_by": [list(entry) for entry in q.order_by or ()],
            "include": {
                k: v
                for k, v in (("total_rows", q.total_rows), ("time_labels", q.time_labels), ("imports", q.imports))
                if v is not None
            },
            "pagination": {"limit": q.limit, "offset": q.offset},
        },
    }


async def _row_days(
    conn: AsyncConnection, q: Query, first: date, grain: str | None, oldest: date | None
) -> tuple[date, ...]:
    """The rolled days of the range read from the visits' daily rows (`trackside.storage.visit_days`), for a
    query without filters over whole days (`Builder.rows_apply`); only days the facts hold (`oldest` on)."""
    if q.filters or grain == "hour" or (q.start is not None and q.end is not None) or oldest is None:
        return ()
    if not any(m in VISIT_ROW_METRICS for m in q.metrics):
        return ()
    return tuple(await days_with_rows(conn, max(first, oldest), q.last))


async def _label_days(
    conn: AsyncConnection, q: Query, first: date, grain: str | None, oldest: date | None
) -> tuple[date, ...]:
    """The rolled days of the range read from the route labels' daily rows (`trackside.storage.label_days`), for
    a query by `event:props:label` alone without filters over whole days (`Builder.label_rows_apply`); only days
    the facts hold (`oldest` on)."""
    if q.dimensions != ("event:props:label",) or q.filters or grain is not None or oldest is None:
        return ()
    if q.start is not None and q.end is not None:
        return ()
    return tuple(await label_days_with_rows(conn, max(first, oldest), q.last))


def _check_label_count(grain: str, first: date, q: Query) -> None:
    """Time labels are listed whole: refuse a list no client wants (an hour-by-hour millennium)."""
    if q.start is not None and q.end is not None:
        hours = (q.end - q.start).total_seconds() / 3600
    else:
        hours = ((q.last - first).days + 1) * 24.0
    buckets = {"hour": hours, "day": hours / 24, "week": hours / 168, "month": hours / 720}[grain]
    if buckets > MAX_TIME_LABELS:
        raise V2Error(
            f"include.time_labels: more than {MAX_TIME_LABELS:,} time:{grain} buckets; use a coarser time dimension"
        )


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0, tzinfo=UTC).isoformat()


class _deadline:
    """The statement timeout of one query's SELECTs: PostgreSQL's `statement_timeout` for the
    transaction; on SQLite a progress handler that interrupts a statement past the deadline."""

    def __init__(self, conn: AsyncConnection, seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.sqlite: Any = None

    async def __aenter__(self) -> None:
        if self.conn.dialect.name == "postgresql":
            await self.conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(self.seconds * 1000))}")
            return
        raw = await self.conn.get_raw_connection()
        self.sqlite = raw.driver_connection
        deadline = time.monotonic() + self.seconds
        await self.sqlite.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1_000)

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if self.sqlite is not None:
            await self.sqlite.set_progress_handler(None, 0)
        if exc is None:
            return
        if isinstance(exc, OperationalError) and "interrupted" in str(exc.orig):
            raise QueryTimeout(f"the query took longer than {self.seconds:g} s") from exc
        if isinstance(exc, DBAPIError) and _sqlstate(exc) == "57014":
            raise QueryTimeout(f"the query took longer than {self.seconds:g} s") from exc
        if isinstance(exc, DBAPIError) and _sqlstate(exc) == "2201B":
            detail = str(exc.orig).splitlines()[0].split(">: ", 1)[-1]  # past asyncpg's class name
            raise V2Error(f"{detail} (PostgreSQL's regular expressions)") from exc


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)


async def _fetch(
    conn: AsyncConnection, plan: Plan, prefix: tuple[tuple[int, str], ...], first: date, grain: str | None
) -> Rows:
    """A plan's groups by their answer key; `prefix`: (position, value) of key parts the SELECT
    does not group by (an `event:goal` breakdown's goal)."""
    out: Rows = {}
    for row in await conn.execute(plan.select):
        key: list[str] = []
        at = 0
        for dim, width in plan.dimensions:
            if width == 0:
                key.append("")
                continue
            raw = tuple(row[at : at + width])
            at += width
            key.append(_label(dim, raw, first, grain))
        for position, value in prefix:
            key[position] = value
        figures = row[at:]
        out[tuple(key)] = {name: float(value or 0) for name, value in zip(plan.figures, figures, strict=True)}
    return out


def _label(dim: str, raw: tuple[Any, ...], first: date, grain: str | None) -> str:
    if dim.startswith("time"):
        assert grain is not None
        return bucket(grain, raw if grain == "hour" else raw[0], first)
    if dim == "visit:country_name":
        return country_name(str(raw[0]))
    return str(raw[0])


def _merge(into: Rows, rows: Rows) -> None:
    for key, figures in rows.items():
        into.setdefault(key, {}).update(figures)


def _without_goals(q: Query) -> tuple[Any, ...]:
    return tuple(f for f in q.filters if not (isinstance(f, Leaf) and f.dimension == "event:goal"))


async def _rows(conn: AsyncConnection, b: Builder, q: Query, first: date, grain: str | None, goals: list[Goal]) -> Rows:
    rows: Rows = {}
    metrics = set(q.metrics)
    event_dims = [d for d in q.dimensions if d in EVENT_DIMENSIONS]
    event_metrics = {
        "visitors", "pageviews", "events", "percentage", "conversion_rate", "group_conversion_rate", "time_on_page",
        "scroll_depth",
    }  # fmt: skip
    visits_by_events = "visits" in metrics and bool(event_dims)
    first_metric = q.metrics[0]
    session = {"bounce_rate", "visit_duration", "views_per_visit"}
    want_visits = bool(metrics & session) or ("visits" in metrics and not visits_by_events)
    # The SELECTs to run, with the key parts each does not group by (an `event:goal` breakdown's goal).
    jobs: list[tuple[Plan, tuple[tuple[int, str], ...]]] = []
    if metrics & event_metrics or visits_by_events:
        name = next((m for m in q.metrics if m in event_metrics or m == "visits"), first_metric)
        needs = _event_figures(metrics, visits_by_events)
        if "event:goal" not in q.dimensions and b.by_visits(q.filters, needs):
            # Counted from visits: the visit figures come from the same SELECT (the cards: one scan).
            jobs.append((b.visit_event_plan(name, q.filters, needs, with_visits=want_visits), ()))
            want_visits = False
        elif "event:goal" in q.dimensions:
            position = q.dimensions.index("event:goal")
            for goal in goals:
                jobs.append((b.event_plan(name, q.filters, goal, needs=needs), ((position, goal.name),)))
        else:
            jobs.append((b.event_plan(name, q.filters, needs=needs), ()))
    if want_visits:
        name = next(m for m in q.metrics if m in session or m == "visits")
        if b.rows_apply(q.filters) and b.by_visits(q.filters, frozenset()):
            # The same figures from the visits' daily rows of rolled days (and today's visits).
            jobs.append((b.visit_event_plan(name, q.filters, frozenset(), with_visits=True), ()))
        else:
            jobs.append((b.visit_plan(name, q.filters), ()))
    for metric, plan_of in (
        ("content_views", b.looks_plan),
        ("unique_viewers", b.looks_plan),
        ("impressions", b.impressions_plan),
        ("api_calls", b.api_plan),
        ("errors", b.errors_plan),
        ("bot_hits", b.bots_plan),
    ):
        if metric in metrics and not (metric == "unique_viewers" and "content_views" in metrics):
            jobs.append((plan_of(metric), ()))
    if len(jobs) == 1 and (paged := _paged(q, jobs[0][0], conn.dialect.name)) is not None:
        jobs = [(paged, jobs[0][1])]
    for plan, prefix in jobs:
        _merge(rows, await _fetch(conn, plan, prefix, first, grain))
    if not q.dimensions and not rows:
        rows[()] = {}
    if "visits" in metrics and visits_by_events:
        for figures in rows.values():
            figures["visits"] = figures.get("event_visits", 0.0)
    if "percentage" in metrics:
        total = await _total_visitors(conn, b, q.filters, first, grain)
        for figures in rows.values():
            figures["percentage"] = _ratio(figures.get("visitors", 0.0), total, 1)
    if "conversion_rate" in metrics:
        total = await _total_visitors(conn, b, _without_goals(q), first, grain)
        for figures in rows.values():
            figures["conversion_rate"] = _ratio(figures.get("visitors", 0.0), total, 2)
    if "group_conversion_rate" in metrics:
        await _group_rates(conn, b, q, rows, first, grain)
    return rows


# Dimensions whose SQL value is the answer's label (not null, no relabelling): their order in SQL is the
# order of the labels here (by code point: SQLite's BINARY, PostgreSQL's "C" collation).
SQL_ORDERED_DIMENSIONS = frozenset(
    d for d in (*VISIT_DIMENSIONS, *CONTENT_DIMENSIONS, "event:page", "event:props:label") if d != "visit:country_name"
)


def _paged(q: Query, plan: Plan, dialect: str) -> Plan | None:
    """The plan ordered and cut in SQL to the rows up to the page's end, when its rows alone make the answer
    and the order is by its own figures and dimensions (`_order`'s order: then every dimension ascending):
    the database sorts the groups instead of this process (a month's entry pages, items). None when not."""
    if q.total_rows or not q.dimensions or any(d not in SQL_ORDERED_DIMENSIONS for d in q.dimensions):
        return None
    if any(width != 1 for _, width in plan.dimensions) or [d for d, _ in plan.dimensions] != list(q.dimensions):
        return None
    columns = list(plan.select.selected_columns)
    figures = dict(zip(plan.figures, columns[len(q.dimensions) :], strict=True))
    postgres = dialect == "postgresql"

    def dim(i: int) -> Any:
        return columns[i].collate("C") if postgres else columns[i]

    order: list[Any] = []
    for name, direction in q.order_by or ():
        if name in q.dimensions:
            column = dim(q.dimensions.index(name))
        elif name in figures and name in PLAIN_METRICS:
            column = figures[name]
        else:
            return None
        order.append(column.desc() if direction == "desc" else column.asc())
    order += [dim(i).asc() for i in range(len(q.dimensions))]
    return replace(plan, select=plan.select.order_by(*order).limit(q.offset + q.limit))


# Metrics whose answer is their figure, as counted (so ordered alike in SQL and here).
PLAIN_METRICS = frozenset(
    ("visitors", "visits", "pageviews", "events", "content_views", "unique_viewers", "impressions", "api_calls",
     "errors", "bot_hits")
)  # fmt: skip


def _event_figures(metrics: set[str], visits_by_events: bool) -> frozenset[str]:
    """The figures of the events' SELECT the metrics are made of."""
    needs = {figure for metric, figure in EVENT_FIGURE_OF if metric in metrics}
    if visits_by_events:
        needs.add("event_visits")
    return frozenset(needs)


# Each metric counted over events, and the figures of the events' SELECT it is made of.
EVENT_FIGURE_OF = (
    ("visitors", "visitors"), ("percentage", "visitors"), ("conversion_rate", "visitors"),
    ("group_conversion_rate", "visitors"), ("pageviews", "pageviews"), ("events", "events"),
    ("time_on_page", "time_on_page_sum"), ("time_on_page", "time_on_page_count"),
    ("scroll_depth", "scroll_sum"), ("scroll_depth", "scroll_count"),
)  # fmt: skip


async def _total_visitors(
    conn: AsyncConnection, b: Builder, filters: tuple[Any, ...], first: date, grain: str | None
) -> float:
    whole = Builder(replace(b.q, dimensions=()), first, grain, list(b.goals.values()), conn.dialect.name, b.row_days)
    found = await _fetch(conn, whole.event_plan("visitors", filters, needs=VISITORS), (), first, grain)
    return next(iter(found.values()), {}).get("visitors", 0.0)


async def _group_rates(conn: AsyncConnection, b: Builder, q: Query, rows: Rows, first: date, grain: str | None) -> None:
    """Converted visitors over the visitors of the same group (the other dimensions), goal filters off."""
    others = tuple(d for d in q.dimensions if d != "event:goal")
    grouped = Builder(
        replace(q, dimensions=others), first, grain, list(b.goals.values()), conn.dialect.name, b.row_days
    )
    plan = grouped.event_plan("group_conversion_rate", _without_goals(q), needs=VISITORS)
    totals = await _fetch(conn, plan, (), first, grain)
    goal_at = q.dimensions.index("event:goal") if "event:goal" in q.dimensions else None
    for key, figures in rows.items():
        reduced = tuple(v for i, v in enumerate(key) if i != goal_at)
        total = totals.get(reduced, {}).get("visitors", 0.0)
        figures["group_conversion_rate"] = _ratio(figures.get("visitors", 0.0), total, 2)


def _ratio(part: float, whole: float, digits: int) -> float:
    return round(100.0 * part / whole, digits) if whole else 0.0


def _metric(figures: dict[str, float], metric: str) -> int | float:
    if metric == "bounce_rate":
        visits = figures.get("visits", 0.0)
        return round(100.0 * figures.get("bounces", 0.0) / visits, 1) if visits else 0.0
    if metric == "visit_duration":
        visits = figures.get("visits", 0.0)
        return round(figures.get("duration", 0.0) / visits) if visits else 0
    if metric == "views_per_visit":
        visits = figures.get("visits", 0.0)
        return round(figures.get("visit_pageviews", 0.0) / visits, 2) if visits else 0.0
    if metric == "time_on_page":
        # Seconds, the mean over page views followed by another page view of their visit.
        counted = figures.get("time_on_page_count", 0.0)
        return round(figures.get("time_on_page_sum", 0.0) / counted / 1000) if counted else 0
    if metric == "scroll_depth":
        # Percent, the mean deepest scroll over page views the web snippet reported one for.
        counted = figures.get("scroll_count", 0.0)
        return round(figures.get("scroll_sum", 0.0) / counted) if counted else 0
    if metric in ("percentage", "conversion_rate", "group_conversion_rate"):
        return float(figures.get(metric, 0.0))
    return int(figures.get(metric, 0.0))


def _order(q: Query, rows: Rows) -> list[tuple[Key, dict[str, float]]]:
    items = list(rows.items())
    # Stable sorts, least significant first: the dimensions ascending break every tie.
    items.sort(key=lambda kv: kv[0])
    for name, direction in reversed(q.order_by or ()):
        items.sort(key=functools.partial(_sort_value, q, name), reverse=direction == "desc")
    return items


def _sort_value(q: Query, name: str, item: tuple[Key, dict[str, float]]) -> Any:
    if name in q.metrics:
        return _metric(item[1], name)
    return item[0][q.dimensions.index(name)]


def limits_of(settings: Any) -> Limits:
    return Limits(
        timeout_seconds=float(getattr(settings, "query_timeout_seconds", 10.0)),
        window_minutes=int(settings.view_window_minutes),
        retention_days=int(getattr(settings, "fact_retention_days", 90)),
    )

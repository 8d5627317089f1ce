"""Journeys: the page before and the page after a chosen page within the same visit, from the page
view facts (`fact_page_views`: each view's visit, time, route label and path).

The chosen page is a route label (`/p/[post]`) or a path (`/p/a1`, where facts keep paths). Each
view of it is one passage through it: the view just before it in its visit (by time) is its
previous page, "(entry)" when it opened the visit; the view just after it is its next page, "(exit)"
when the visit ended there. Both are named by route label, as derivation stored them on the view
(`fact_page_views.prev_label`, `next_label`: `trackside.derive`). Counted per passage (a visit through the
page twice counts twice) and per visit (distinct visits).

Filters are the v2 query's (`trackside.stats.v2.schema`), applied to visits: a visit dimension by
the visit's entry values, an event filter by the visit holding such an event, so a visit is kept
or dropped whole and its order of pages never has holes.

A route label's journey without filters or exact times reads the rolled days from their daily rows
(`trackside.storage.journey_days`, grouped by the rollup from the same facts: the same figures) and
only the other days (today, a day not rolled yet or dirty) from the facts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.goals import Goal
from trackside.stats.v2.schema import Filter, Query, V2Error, _filter, parse_date_range
from trackside.stats.v2.sql import Builder
from trackside.storage.daily import rolled_days
from trackside.storage.journey_days import label_select
from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_VISITS

ENTRY = "(entry)"
EXIT = "(exit)"
KEYS = ("date_range", "label", "page", "filters", "limit")
DEFAULT_LIMIT = 10
MAX_LIMIT = 100

MEANING = {
    "pageviews": "views of the chosen page in the range: each one passage through it",
    "visits": "visits that passed through the chosen page at least once",
    "count": "passages whose previous (or next) page in the same visit had this route label",
    "visits_of_row": "distinct visits among those passages",
    "share": "count as a percentage of the chosen page's pageviews (each list sums to 100 when whole)",
    ENTRY: "the chosen page opened its visit: no page before it",
    EXIT: "the visit ended on the chosen page: no page after it",
    "visit": "one visitor's page views and site events with no gap over 30 minutes, within one UTC day",
}


@dataclass(frozen=True, slots=True)
class JourneyQuery:
    label: str | None
    page: str | None
    first: date
    last: date
    start: datetime | None
    end: datetime | None
    filters: tuple[Filter, ...]
    raw_filters: list[Any]
    date_range: Any
    limit: int


def parse_journey(body: Any, today: date) -> JourneyQuery:
    if not isinstance(body, dict):
        raise V2Error("the query is a JSON object")
    for key in body:
        if key not in KEYS:
            raise V2Error(f"parameter '{key}' is not supported ({', '.join(KEYS)})")
    label, page = body.get("label"), body.get("page")
    if (label is None) == (page is None):
        raise V2Error("name the page by one of label (a route label) or page (a path)")
    chosen = label if label is not None else page
    if not isinstance(chosen, str) or not chosen.startswith("/") or len(chosen) > 512:
        raise V2Error("label or page is a path starting with / (at most 512 characters)")
    if "date_range" not in body:
        raise V2Error("date_range is required")
    first, last, start, end = parse_date_range(body["date_range"], today)
    raw_filters = body.get("filters", [])
    if not isinstance(raw_filters, list):
        raise V2Error("filters is a list")
    filters = tuple(_filter(f, 0) for f in raw_filters)
    limit = body.get("limit", DEFAULT_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise V2Error(f"limit is an integer from 1 to {MAX_LIMIT}")
    return JourneyQuery(
        label=label,
        page=page,
        first=first or today,
        last=last,
        start=start,
        end=end,
        filters=filters,
        raw_filters=raw_filters,
        date_range=body["date_range"],
        limit=limit,
    )


def _builder(jq: JourneyQuery, goals: list[Goal], dialect: str) -> Builder:
    q = Query(
        metrics=("visits",),
        dimensions=(),
        filters=jq.filters,
        first=jq.first,
        last=jq.last,
        start=jq.start,
        end=jq.end,
    )
    return Builder(q, jq.first, None, goals, dialect)


def _chosen(jq: JourneyQuery, t: Any) -> Any:
    return t.c.label == jq.label if jq.label is not None else t.c.path == jq.page


def journey_select(
    jq: JourneyQuery, goals: list[Goal], dialect: str, only_days: list[date] | None = None
) -> sa.Select[Any]:
    """(side, label, passages, visits) rows, side `prev`, `next` or `page` (the totals, label NULL);
    `only_days`: of those days of the range alone.

    Each page view fact carries the labels of its neighbours in its visit (`prev_label`, `next_label`,
    set by derivation), so this reads the chosen page's views alone: no window over whole visits."""
    pv = FACT_PAGE_VIEWS.alias("pv")
    where = [pv.c.day >= jq.first, pv.c.day <= jq.last, _chosen(jq, pv)]
    if only_days is not None:
        where.append(pv.c.day.in_(only_days))
    if jq.start is not None and jq.end is not None:
        where += [pv.c.ts >= jq.start, pv.c.ts <= jq.end]
    v = FACT_VISITS.alias("v")
    condition = _builder(jq, goals, dialect).visit_condition(v, "visits", jq.filters)
    if condition is not None:
        kept = sa.select(v.c.id).where(v.c.day >= jq.first, v.c.day <= jq.last, condition)
        where.append(pv.c.visit_id.in_(kept))
    # The passages, read once (a CTE referenced three times: PostgreSQL materializes it).
    passages = sa.select(pv.c.visit_id, pv.c.prev_label, pv.c.next_label).where(*where).cte("passages")

    # Distinct visits counted in two steps (per label and visit, then per label): hash aggregates, where
    # COUNT(DISTINCT) would sort every passage.
    def grouped(name: str, column: Any | None) -> sa.Select[Any]:
        keys = [passages.c.visit_id] if column is None else [column, passages.c.visit_id]
        per_visit = sa.select(*keys, sa.func.count().label("n")).group_by(*keys).subquery()
        label = sa.cast(sa.null(), sa.String) if column is None else per_visit.c[column.name]
        out = sa.select(
            sa.literal(name).label("side"),
            label.label("label"),
            sa.func.coalesce(sa.func.sum(per_visit.c.n), 0).label("passages"),
            sa.func.count().label("visits"),
        )
        return out if column is None else out.group_by(per_visit.c[column.name])

    return sa.union_all(  # type: ignore[return-value]
        grouped("prev", passages.c.prev_label), grouped("next", passages.c.next_label), grouped("page", None)
    )


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


async def _rows(conn: AsyncConnection, jq: JourneyQuery, goals: list[Goal]) -> list[tuple[str, str | None, int, int]]:
    """(side, label, passages, visits) as `journey_select` answers them: a route label's journey
    without filters or exact times reads the daily rows of the rolled days (`journey_days`, written
    by the rollup from the same facts, a few rows a day) and the facts of the other days alone;
    any other journey reads the facts."""
    if jq.label is not None and not jq.filters and jq.start is None:
        rolled = await rolled_days(conn, jq.first, jq.last)
        out: list[tuple[str, str | None, int, int]] = [
            (side, neighbour or None, int(passages), int(n_visits))
            for side, neighbour, passages, n_visits in await conn.execute(label_select(jq.label, rolled))
        ]
        rest = [d for d in _days(jq.first, jq.last) if d not in rolled]
        if rest:
            live = journey_select(jq, goals, conn.dialect.name, only_days=rest)
            out += [(s, lb, int(p), int(v)) for s, lb, p, v in await conn.execute(live)]
        return out
    return [(s, lb, int(p), int(v)) for s, lb, p, v in await conn.execute(journey_select(jq, goals, conn.dialect.name))]


async def journeys(conn: AsyncConnection, jq: JourneyQuery, goals: list[Goal]) -> dict[str, Any]:
    if conn.dialect.name == "postgresql":
        # The hash aggregates over a popular page's passages: in memory (this transaction only), not on disk.
        await conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    pageviews = visits = 0
    counts: dict[tuple[str, str], list[int]] = {}
    for side, label, passages, n_visits in await _rows(conn, jq, goals):
        if side == "page":
            pageviews, visits = pageviews + passages, visits + n_visits
            continue
        name = label if label is not None else (ENTRY if side == "prev" else EXIT)
        summed = counts.setdefault((side, name), [0, 0])
        summed[0] += passages
        summed[1] += n_visits
    sides: dict[str, list[tuple[str, int, int]]] = {"prev": [], "next": []}
    for (side, name), (passages, n_visits) in counts.items():
        if passages:
            sides[side].append((name, passages, n_visits))

    def listed(entries: list[tuple[str, int, int]]) -> dict[str, Any]:
        entries.sort(key=lambda e: (-e[1], e[0]))
        shown = entries[: jq.limit]
        others = sum(e[1] for e in entries[jq.limit :])
        return {
            "rows": [
                {"label": name, "count": count, "visits": n, "share": _share(count, pageviews)}
                for name, count, n in shown
            ],
            "others": others,
        }

    previous, following = listed(sides["prev"]), listed(sides["next"])
    return {
        "page": {"label": jq.label} if jq.label is not None else {"page": jq.page},
        "pageviews": pageviews,
        "visits": visits,
        "previous": previous["rows"],
        "previous_others": previous["others"],
        "next": following["rows"],
        "next_others": following["others"],
    }


def _share(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0

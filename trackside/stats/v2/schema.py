"""A Stats API v2 query body (Plausible's `POST /api/v2/query`), parsed and checked against the
subset Trackside answers. Anything outside it is a `V2Error` whose message names it (a 400).

Times are UTC: date shortcuts count UTC days, and a date pair covers its first day's 00:00:00 to
its last day's 23:59:59 UTC. Shortcuts follow Plausible's current meaning: `7d`, `28d`, `30d`, `91d`
are that many whole days before today; `6mo`, `12mo` that many whole months before this one;
`day`, `month`, `year` the current one; `all` from the oldest fact day to today."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

METRICS = (
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
    "events",
    "percentage",
    "conversion_rate",
    "group_conversion_rate",
    "time_on_page",
    "scroll_depth",
)
# Trackside's own figures, beside Plausible's.
EXTENSION_METRICS = ("content_views", "unique_viewers", "impressions", "api_calls", "errors", "bot_hits")
SESSION_METRICS = ("bounce_rate", "visit_duration", "views_per_visit")
TIME_DIMENSIONS = ("time", "time:hour", "time:day", "time:week", "time:month")
EVENT_DIMENSIONS = ("event:page", "event:goal", "event:props:label")
# Content metrics only: a look's or impression's view type is `view`, `player`, `widget`, `listing` ...
CONTENT_DIMENSIONS = ("event:props:content_kind", "event:props:content_id", "event:props:view_type")
VISIT_DIMENSIONS = (
    "visit:source",
    "visit:referrer",
    "visit:utm_source",
    "visit:utm_medium",
    "visit:utm_campaign",
    "visit:device",
    "visit:browser",
    "visit:os",
    "visit:country",
    "visit:country_name",
    "visit:entry_page",
    "visit:exit_page",
)
DIMENSIONS = (*EVENT_DIMENSIONS, *VISIT_DIMENSIONS, *CONTENT_DIMENSIONS)
OPERATORS = ("is", "is_not", "contains", "contains_not", "matches", "matches_not")
NEGATIVE = {"is_not": "is", "contains_not": "contains", "matches_not": "matches"}
SHORTCUTS = ("day", "7d", "28d", "30d", "91d", "month", "6mo", "12mo", "year", "all")
KEYS = ("site_id", "metrics", "date_range", "dimensions", "filters", "order_by", "include", "pagination")
INCLUDE = ("total_rows", "time_labels", "imports")
MAX_LIMIT = 10_000
EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)
MAX_FILTER_DEPTH = 20


class V2Error(ValueError):
    """A query outside the subset or malformed: answered 400 with this message."""


@dataclass(frozen=True, slots=True)
class Leaf:
    op: str  # one of OPERATORS
    dimension: str
    values: tuple[str, ...]
    case_sensitive: bool = True

    @property
    def negative(self) -> bool:
        return self.op in NEGATIVE

    @property
    def positive_op(self) -> str:
        return NEGATIVE.get(self.op, self.op)


@dataclass(frozen=True, slots=True)
class Node:
    op: str  # "and", "or" or "not" (one child)
    children: tuple[Filter, ...]


Filter = Leaf | Node


def leaves(f: Filter) -> list[Leaf]:
    if isinstance(f, Leaf):
        return [f]
    return [leaf for child in f.children for leaf in leaves(child)]


@dataclass(frozen=True, slots=True)
class Query:
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    filters: tuple[Filter, ...]  # an implicit "and"
    first: date | None  # None: `all`, resolved against the oldest fact day
    last: date
    # Exact instants for an ISO date-time pair (naive UTC, inclusive); None for whole days.
    start: datetime | None = None
    end: datetime | None = None
    order_by: tuple[tuple[str, str], ...] | None = None
    limit: int = MAX_LIMIT
    offset: int = 0
    total_rows: bool = False
    time_labels: bool = False
    imports: bool | None = None
    site_id: str | None = None
    date_range: Any = None  # as asked
    raw_filters: list[Any] = field(default_factory=list)

    @property
    def time_dimension(self) -> str | None:
        return next((d for d in self.dimensions if d in TIME_DIMENSIONS), None)

    def with_first(self, first: date) -> Query:
        return _replace(self, first=first)


def _replace(q: Query, **changes: Any) -> Query:
    from dataclasses import replace

    return replace(q, **changes)


def parse(body: Any, today: date) -> Query:
    if not isinstance(body, dict):
        raise V2Error("the query is a JSON object")
    for key in body:
        if key not in KEYS:
            raise V2Error(f"parameter '{key}' is not supported")
    site_id = body.get("site_id")
    if site_id is not None and not isinstance(site_id, str):
        raise V2Error("site_id is a string")
    metrics = _names(body.get("metrics"), "metrics", required=True)
    for m in metrics:
        if m not in METRICS and m not in EXTENSION_METRICS:
            raise V2Error(f"metric '{m}' is not supported")
    dimensions = _names(body.get("dimensions", []), "dimensions")
    for d in dimensions:
        if d not in DIMENSIONS and d not in TIME_DIMENSIONS:
            raise V2Error(f"dimension '{d}' is not supported")
    if sum(d in TIME_DIMENSIONS for d in dimensions) > 1:
        raise V2Error("at most one time dimension")
    if "date_range" not in body:
        raise V2Error("date_range is required")
    first, last, start, end = parse_date_range(body["date_range"], today)
    raw_filters = body.get("filters", [])
    if not isinstance(raw_filters, list):
        raise V2Error("filters is a list")
    filters = tuple(_filter(f, 0) for f in raw_filters)
    q = Query(
        metrics=metrics,
        dimensions=dimensions,
        filters=filters,
        first=first,
        last=last,
        start=start,
        end=end,
        site_id=site_id,
        date_range=body["date_range"],
        raw_filters=raw_filters,
    )
    q = _replace(q, order_by=_order_by(body.get("order_by"), metrics, dimensions))
    q = _include(q, body.get("include", {}))
    q = _pagination(q, body.get("pagination", {}))
    _check(q)
    return q


def _names(value: Any, param: str, *, required: bool = False) -> tuple[str, ...]:
    if value is None and required:
        raise V2Error(f"{param} is required")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise V2Error(f"{param} is a list of names")
    if required and not value:
        raise V2Error(f"{param} needs at least one entry")
    if len(set(value)) != len(value):
        raise V2Error(f"{param} repeats an entry")
    return tuple(value)


def parse_date_range(value: Any, today: date) -> tuple[date | None, date, datetime | None, datetime | None]:
    """(first day, last day, start, end): start and end only for a date-time pair."""
    if isinstance(value, str):
        return (*_shortcut(value, today), None, None)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise V2Error(f"date_range {_show(value)} is not supported: a shortcut or two ISO dates or date-times")
    a, b = value
    if len(a) == 10 and len(b) == 10:
        try:
            first, last = date.fromisoformat(a), date.fromisoformat(b)
        except ValueError:
            raise V2Error(f"date_range {_show(value)}: not valid ISO dates") from None
        _bounded(first, last, value)
        return first, last, None, None
    try:
        start, end = _instant(a), _instant(b)
    except ValueError:
        raise V2Error(f"date_range {_show(value)}: not valid ISO dates or date-times") from None
    _bounded(start.date(), end.date(), value)
    if end < start:
        raise V2Error(f"date_range {_show(value)}: the end is before the start")
    return start.date(), end.date(), start, end


def _instant(text: str) -> datetime:
    """An ISO date-time with an offset (naive ones are UTC), as naive UTC."""
    if len(text) <= 10 or "T" not in text.upper():
        raise ValueError(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _bounded(first: date, last: date, value: Any) -> None:
    if not (EARLIEST <= first and last <= LATEST):
        raise V2Error(f"date_range {_show(value)}: dates between {EARLIEST} and {LATEST}")
    if last < first:
        raise V2Error(f"date_range {_show(value)}: the end is before the start")


def _month_start(day: date, months_back: int) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def _shortcut(name: str, today: date) -> tuple[date | None, date]:
    if name not in SHORTCUTS:
        raise V2Error(f"date_range '{name}' is not supported ({', '.join(SHORTCUTS)}, or two ISO dates)")
    if name == "day":
        return today, today
    if name == "all":
        return None, today
    if name.endswith("d"):
        n = int(name[:-1])
        return today - timedelta(days=n), today - timedelta(days=1)
    if name == "month":
        return today.replace(day=1), _month_start(today, -1) - timedelta(days=1)
    if name == "year":
        return date(today.year, 1, 1), date(today.year, 12, 31)
    n = int(name[:-2])  # 6mo, 12mo: whole months before this one
    return _month_start(today, n), today.replace(day=1) - timedelta(days=1)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _filter(raw: Any, depth: int) -> Filter:
    if depth > MAX_FILTER_DEPTH:
        raise V2Error("filters are nested too deeply")
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise V2Error(f"invalid filter {_show(raw)}")
    op = raw[0]
    if op in ("and", "or"):
        if len(raw) != 2 or not isinstance(raw[1], list) or not raw[1]:
            raise V2Error(f'invalid filter {_show(raw)}: ["{op}", [filter, ...]]')
        return Node(op, tuple(_filter(f, depth + 1) for f in raw[1]))
    if op == "not":
        if len(raw) != 2:
            raise V2Error(f'invalid filter {_show(raw)}: ["not", filter]')
        return Node("not", (_filter(raw[1], depth + 1),))
    if op not in OPERATORS:
        raise V2Error(f"filter operator '{op}' is not supported")
    if len(raw) not in (3, 4) or not isinstance(raw[1], str):
        raise V2Error(f"invalid filter {_show(raw)}: [operator, dimension, [values]] or with {{modifiers}}")
    dimension = raw[1]
    if dimension in TIME_DIMENSIONS:
        raise V2Error(f"dimension '{dimension}' cannot be filtered; set date_range instead")
    if dimension not in DIMENSIONS:
        raise V2Error(f"dimension '{dimension}' is not supported")
    values = raw[2]
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise V2Error(f"invalid filter {_show(raw)}: the values are a non-empty list of strings")
    case_sensitive = True
    if len(raw) == 4:
        modifiers = raw[3]
        if not isinstance(modifiers, dict) or set(modifiers) - {"case_sensitive"}:
            raise V2Error(f"invalid filter {_show(raw)}: the one modifier supported is case_sensitive")
        if not isinstance(modifiers.get("case_sensitive", True), bool):
            raise V2Error("case_sensitive is true or false")
        case_sensitive = modifiers.get("case_sensitive", True)
    if dimension == "event:goal" and op not in ("is", "contains"):
        raise V2Error(f"filter operator '{op}' is not supported for event:goal (is or contains)")
    if op in ("matches", "matches_not"):
        for pattern in values:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise V2Error(f"invalid regular expression {pattern!r}: {exc}") from None
    return Leaf(op, dimension, tuple(values), case_sensitive)


def _order_by(raw: Any, metrics: tuple[str, ...], dimensions: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        time_dim = next((d for d in dimensions if d in TIME_DIMENSIONS), None)
        default = [(time_dim, "asc")] if time_dim else []
        return (*default, (metrics[0], "desc"))
    if not isinstance(raw, list):
        raise V2Error("order_by is a list of [metric or dimension, asc or desc]")
    out = []
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in ("asc", "desc")):
            raise V2Error(f"invalid order_by entry {_show(entry)}")
        if entry[0] not in metrics and entry[0] not in dimensions:
            raise V2Error(f"invalid order_by entry {_show(entry)}: not a queried metric or dimension")
        out.append((entry[0], entry[1]))
    return tuple(out)


def _include(q: Query, raw: Any) -> Query:
    if not isinstance(raw, dict):
        raise V2Error("include is an object")
    for key, value in raw.items():
        if key not in INCLUDE:
            raise V2Error(f"include.{key} is not supported")
        if not isinstance(value, bool):
            raise V2Error(f"include.{key} is true or false")
    if raw.get("time_labels") and q.time_dimension is None:
        raise V2Error("include.time_labels needs a time dimension")
    return _replace(
        q,
        total_rows=raw.get("total_rows", False),
        time_labels=raw.get("time_labels", False),
        imports=raw.get("imports"),
    )


def _pagination(q: Query, raw: Any) -> Query:
    if not isinstance(raw, dict) or set(raw) - {"limit", "offset"}:
        raise V2Error("pagination is {limit, offset}")
    limit, offset = raw.get("limit", MAX_LIMIT), raw.get("offset", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise V2Error(f"pagination.limit is an integer from 1 to {MAX_LIMIT}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise V2Error("pagination.offset is an integer of 0 or more")
    return _replace(q, limit=limit, offset=offset)


def has_goal(q: Query) -> bool:
    return "event:goal" in q.dimensions or any(leaf.dimension == "event:goal" for f in q.filters for leaf in leaves(f))


def _check(q: Query) -> None:
    if "percentage" in q.metrics and not q.dimensions:
        raise V2Error("metric 'percentage' needs at least one dimension")
    for m in ("conversion_rate", "group_conversion_rate"):
        if m in q.metrics and not has_goal(q):
            raise V2Error(f"metric '{m}' needs an event:goal filter or dimension")
    if any(m in ("conversion_rate", "group_conversion_rate") for m in q.metrics):
        nested = [leaf for f in q.filters if isinstance(f, Node) for leaf in leaves(f)]
        if any(leaf.dimension == "event:goal" for leaf in nested):
            raise V2Error("conversion rates need event:goal filters at the top level (not inside and/or/not)")
    event_dims = [d for d in q.dimensions if d in EVENT_DIMENSIONS]
    for m in SESSION_METRICS:
        if m in q.metrics and event_dims:
            raise V2Error(f"metric '{m}' cannot be broken down by the event dimension '{event_dims[0]}'")


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min)


def echo_range(q: Query, first: date) -> list[str]:
    """The date range as answered: UTC instants, as Plausible echoes them."""
    start = q.start or day_start(first)
    end = q.end or datetime.combine(q.last, time(23, 59, 59))
    return [start.replace(tzinfo=UTC).isoformat(), end.replace(tzinfo=UTC).isoformat()]


def time_grain(q: Query, first: date) -> str | None:
    """hour, day, week or month: `time` picks by the range's length (one day: hours; up to 91 days:
    days; longer: months)."""
    dim = q.time_dimension
    if dim is None:
        return None
    if dim != "time":
        return dim.split(":", 1)[1]
    if q.start is not None and q.end is not None:
        span = (q.end - q.start).total_seconds()
        return "hour" if span <= 86_400 else "day" if span <= 91 * 86_400 else "month"
    days = (q.last - first).days + 1
    return "hour" if days <= 1 else "day" if days <= 91 else "month"

"""The query API: metrics by dimensions, with filters, a period and pagination, in the spirit of
Plausible's Stats API v2. Answered from the same per-day figures as every other read (daily rows
for rolled days, raw events otherwise).

What a figure means over a range: counts add up; `visitors` of the whole site (no dimension, or
by day) merges signed-in users and adds anonymous visitor-days; `visitors` broken down by another
dimension is the sum of each day's distinct visitors (visitor-days); a content item's
`unique_viewers` merges signed-in users and adds anonymous visitor-days."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from trackside.figures import DayFigures, merge_users

SITE_METRICS = (
    "page_views",
    "visitors",
    "content_views",
    "impressions",
    "api_calls",
    "errors",
    "signups",
    "uploads",
    "bot_hits",
)
PAGE_DIMENSIONS = {
    "label": "label",
    "page": "label",
    "country": "country",
    "device": "device",
    "browser": "browser",
    "os": "os",
    "referrer": "referrer",
    "hour": "hour",
    "utm_source": "utm_source",
}
# Content views (looks) by the look's view type (view, player, widget, ...) or the viewer's device.
LOOK_DIMENSIONS = {"view_type": "view_type", "view_device": "view_device"}
OTHER_DIMENSIONS = ("day", "content", "error_type", "authenticated", *LOOK_DIMENSIONS)
DIMENSIONS = (*PAGE_DIMENSIONS, *OTHER_DIMENSIONS)
CONTENT_METRICS = ("content_views", "unique_viewers", "impressions")
MAX_DAYS = 400
MAX_LIMIT = 1000

DEFINITIONS = {
    "page_views": "navigations seen (documents, Next.js data and RSC fetches, snippet beacons); bots never",
    "visitors": "site-wide: signed-in users merged plus anonymous visitor-days; by another dimension: visitor-days",
    "content_views": "looks at content items (one visitor, one item, within the view window); author excluded",
    "unique_viewers": "per content item: signed-in users merged plus anonymous visitor-days",
    "impressions": "items shown in feeds, search results or widgets",
    "api_calls": "requests routed to the API",
    "errors": "5xx answers and 404 pages",
    "bot_hits": "requests from bots, never part of any other metric",
}


class QueryError(ValueError):
    """A bad parameter: the message names it (400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True, slots=True)
class Query:
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    first: date
    last: date
    filters: tuple[tuple[str, str, tuple[str, ...]], ...]
    limit: int
    offset: int
    order_desc: bool


EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)


def period_range(period: Any, today: date) -> tuple[date, date]:
    if period in (None, "30d"):
        return today - timedelta(days=29), today
    if period == "7d":
        return today - timedelta(days=6), today
    if period == "today":
        return today, today
    if period == "yesterday":
        return today - timedelta(days=1), today - timedelta(days=1)
    if isinstance(period, str) and "," in period:
        period = dict(zip(("from", "to"), period.split(",", 1), strict=True))
    if isinstance(period, dict) and set(period) == {"from", "to"}:
        try:
            first, last = date.fromisoformat(str(period["from"])), date.fromisoformat(str(period["to"]))
        except ValueError:
            raise QueryError("period", "dates are YYYY-MM-DD") from None
        if not (EARLIEST <= first and last <= LATEST):
            # Far days are no error of the data but of the question; and the day arithmetic around
            # the period (the view window, the week before) would overflow at year 1 or 9999.
            raise QueryError("period", f"dates between {EARLIEST} and {LATEST}")
        if last < first:
            raise QueryError("period", "'to' is before 'from'")
        if (last - first).days >= MAX_DAYS:
            raise QueryError("period", f"at most {MAX_DAYS} days")
        return first, last
    raise QueryError("period", "one of today, yesterday, 7d, 30d, or {from, to} (YYYY-MM-DD)")


def parse_query(raw: dict[str, Any], today: date) -> Query:
    if not isinstance(raw, dict):
        raise QueryError("body", "a JSON object is expected")
    unknown = set(raw) - {"metrics", "dimensions", "filters", "period", "limit", "offset", "order"}
    if unknown:
        raise QueryError(sorted(unknown)[0], "unknown parameter")
    metrics = _names(raw.get("metrics", ["page_views", "visitors"]), "metrics")
    dimensions = _names(raw.get("dimensions", []), "dimensions")
    for m in metrics:
        if m not in SITE_METRICS and m not in CONTENT_METRICS:
            raise QueryError("metrics", f"unknown metric {m!r}; known: {', '.join(SITE_METRICS + CONTENT_METRICS)}")
    for d in dimensions:
        if d not in DIMENSIONS:
            raise QueryError("dimensions", f"unknown dimension {d!r}; known: {', '.join(DIMENSIONS)}")
    non_time = [d for d in dimensions if d != "day"]
    if len(non_time) > 1:
        raise QueryError("dimensions", "at most one dimension besides 'day'")
    if len(set(dimensions)) != len(dimensions):
        raise QueryError("dimensions", "a dimension is repeated")
    grouped = non_time[0] if non_time else None
    if grouped == "content":
        bad = [m for m in metrics if m not in CONTENT_METRICS]
        if bad:
            raise QueryError("metrics", f"{bad[0]!r} is not a content metric; by content: {', '.join(CONTENT_METRICS)}")
    elif grouped in PAGE_DIMENSIONS or grouped == "authenticated":
        bad = [m for m in metrics if m not in ("page_views", "visitors")]
        if bad:
            raise QueryError("metrics", f"{bad[0]!r} cannot be broken down by {grouped}; use page_views or visitors")
    elif grouped in LOOK_DIMENSIONS:
        if metrics != ("content_views",):
            raise QueryError("metrics", f"by {grouped} the metric is content_views")
    elif grouped == "error_type":
        if metrics != ("errors",):
            raise QueryError("metrics", "by error_type the metric is errors")
    elif any(m in ("unique_viewers",) for m in metrics):
        raise QueryError("metrics", "unique_viewers needs the content dimension")
    filters = []
    raw_filters = raw.get("filters", [])
    if not isinstance(raw_filters, list):
        raise QueryError("filters", "a list of [operator, dimension, [values]]")
    for f in raw_filters:
        if not (isinstance(f, list) and len(f) == 3 and f[0] in ("is", "is_not") and isinstance(f[2], list)):
            raise QueryError("filters", 'each filter is ["is" or "is_not", dimension, [values]]')
        if f[1] != grouped:
            raise QueryError("filters", "a filter applies to the dimension being broken down")
        filters.append((f[0], f[1], tuple(str(v) for v in f[2])))
    first, last = period_range(raw.get("period"), today)
    limit = _int(raw.get("limit", 100), "limit", 1, MAX_LIMIT)
    offset = _int(raw.get("offset", 0), "offset", 0, 10**9)
    order = raw.get("order", "desc")
    if order not in ("asc", "desc"):
        raise QueryError("order", "asc or desc")
    return Query(metrics, tuple(dimensions), first, last, tuple(filters), limit, offset, order == "desc")


def _names(value: Any, param: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise QueryError(param, "a list of names")
    if param == "metrics" and not value:
        raise QueryError(param, "at least one metric")
    return tuple(value)


def _int(value: Any, param: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise QueryError(param, "an integer") from None
    if not low <= number <= high:
        raise QueryError(param, f"between {low} and {high}")
    return number


Sketches = dict[tuple[str, str], list[bytes]]


@dataclass
class Ranked:
    """A query's rows in order, before the page's unique viewers are merged (`finish_query`)."""

    q: Query
    ordered: list[tuple[tuple[str, ...], dict[str, int]]]
    parts_of: dict[tuple[str, ...], list[DayFigures]]
    viewers_later: bool

    @property
    def page(self) -> list[tuple[tuple[str, ...], dict[str, int]]]:
        return self.ordered[self.q.offset : self.q.offset + self.q.limit]


def run_query(q: Query, days: list[DayFigures], more_sketches: Sketches | None = None) -> dict[str, Any]:
    """`more_sketches`: signed-in viewers' sketches of items beyond those of `days` (rolled days
    whose items were summed by the database: `rolled_item_totals`)."""
    return finish_query(rank_query(q, days, more_sketches), more_sketches)


def rank_query(q: Query, days: list[DayFigures], more_sketches: Sketches | None = None) -> Ranked:
    grouped = next((d for d in q.dimensions if d != "day"), None)
    by_day = "day" in q.dimensions
    # Merging every item's signed-in viewers costs most of a 30-day content query; when the rows are
    # not ordered by unique viewers, only the page's rows need them.
    viewers_later = grouped == "content" and "unique_viewers" in q.metrics and q.metrics[0] != "unique_viewers"
    rows: dict[tuple[str, ...], dict[str, int]] = {}
    parts_of: dict[tuple[str, ...], list[DayFigures]] = {}
    buckets: list[tuple[str, list[DayFigures]]] = [(d.day.isoformat(), [d]) for d in days] if by_day else [("", days)]
    for day_key, part in buckets:
        if grouped == "content":
            groups = _content(part, with_viewers=not viewers_later, more_sketches=more_sketches)
        else:
            groups = _group(grouped, part, q.metrics)
        for key, values in groups.items():
            if not _kept(q.filters, key):
                continue
            dims = tuple(k for k in ((day_key,) if by_day else ()) + ((key,) if grouped else ()))
            rows[dims] = values
            if viewers_later:
                parts_of[dims] = part
    ordered = (
        sorted(rows.items(), key=lambda kv: kv[0])
        if by_day and not grouped
        else sorted(rows.items(), key=lambda kv: (-kv[1][q.metrics[0]] if q.order_desc else kv[1][q.metrics[0]], kv[0]))
    )
    return Ranked(q, ordered, parts_of, viewers_later)


def finish_query(ranked: Ranked, more_sketches: Sketches | None = None) -> dict[str, Any]:
    q, page = ranked.q, ranked.page
    if ranked.viewers_later:
        for dims, values in page:
            kind, item = dims[-1].split(":", 1)
            parts = _item_parts(ranked.parts_of[dims], (kind, item))
            values["unique_viewers"] = _viewers(parts, more_sketches, (kind, item))
    return {
        "results": [{"dimensions": list(k), "metrics": [v[m] for m in q.metrics]} for k, v in page],
        "meta": {
            "metrics": list(q.metrics),
            "dimensions": list(q.dimensions),
            "period": {"from": q.first.isoformat(), "to": q.last.isoformat()},
            "total_rows": len(ranked.ordered),
            "limit": q.limit,
            "offset": q.offset,
            "definitions": {m: DEFINITIONS[m] for m in q.metrics if m in DEFINITIONS},
        },
    }


def _kept(filters: tuple[tuple[str, str, tuple[str, ...]], ...], key: str) -> bool:
    for op, _, values in filters:
        if (key in values) != (op == "is"):
            return False
    return True


def _group(grouped: str | None, days: list[DayFigures], metrics: tuple[str, ...]) -> dict[str, dict[str, int]]:
    if grouped is None:
        return {"": _site_totals(days)}
    if grouped == "content":
        return _content(days)
    if grouped == "authenticated":
        pv = sum(d.counts["page_views"] for d in days)
        pv_auth = sum(d.counts["page_views_authenticated"] for d in days)
        users = merge_users([(d.users, d.users_sketch) for d in days])
        anonymous = sum(d.unique_visitors - d.unique_visitors_authenticated for d in days)
        return {
            "true": {"page_views": pv_auth, "visitors": users},
            "false": {"page_views": pv - pv_auth, "visitors": anonymous},
        }
    dim = "error" if grouped == "error_type" else LOOK_DIMENSIONS.get(grouped) or PAGE_DIMENSIONS[grouped]
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for d in days:
        for (name, key), (count, _, visitors, _) in d.dims.items():
            if name == dim:
                out[key]["page_views"] += count
                out[key]["visitors"] += visitors
                out[key]["errors"] += count
                out[key]["content_views"] += count
    return {k: {m: v[m] for m in metrics} for k, v in out.items()}


def _site_totals(days: list[DayFigures]) -> dict[str, int]:
    users = merge_users([(d.users, d.users_sketch) for d in days])
    anonymous = sum(d.unique_visitors - d.unique_visitors_authenticated for d in days)
    return {
        "page_views": sum(d.counts["page_views"] for d in days),
        "visitors": users + anonymous,
        "content_views": sum(i.counts["views"] for d in days for i in d.items.values()),
        "impressions": sum(d.counts["impressions"] for d in days),
        "api_calls": sum(d.counts["api_calls"] for d in days),
        "errors": sum(d.counts["errors"] for d in days),
        "signups": sum(d.counts["signups"] for d in days),
        "uploads": sum(d.counts["uploads"] for d in days),
        "bot_hits": sum(d.counts["bot_hits"] for d in days),
    }


def _content(
    days: list[DayFigures], *, with_viewers: bool = True, more_sketches: Sketches | None = None
) -> dict[str, dict[str, int]]:
    parts: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for d in days:
        for key, figures_of_day in d.items.items():
            parts[key].append(figures_of_day)
    out = {}
    for (kind, item), figures in parts.items():
        row = {
            "content_views": sum(f.counts["views"] for f in figures),
            "impressions": sum(f.counts["impressions"] for f in figures),
        }
        if with_viewers:
            row["unique_viewers"] = _viewers(figures, more_sketches, (kind, item))
        out[f"{kind}:{item}"] = row
    return out


def _item_parts(days: list[DayFigures], key: tuple[str, str]) -> list[Any]:
    return [d.items[key] for d in days if key in d.items]


def _viewers(figures: list[Any], more_sketches: Sketches | None = None, key: tuple[str, str] | None = None) -> int:
    """One item's unique viewers over its days: signed-in users merged, anonymous visitor-days added."""
    parts: list[tuple[set[str] | None, bytes | None]] = [(f.users, f.users_sketch) for f in figures]
    if more_sketches and key is not None:
        parts += [(None, sketch) for sketch in more_sketches.get(key, ())]
    return merge_users(parts) + sum(f.anonymous_viewers for f in figures)


def viewers_needed(q: Query) -> bool:
    """Whether a query's answer merges items' signed-in viewers for every row (not only its page)."""
    return "content" in q.dimensions and q.metrics[0] == "unique_viewers"


def page_items(ranked: Ranked) -> list[tuple[str, str]]:
    """The content items of a ranked query's page."""
    out = []
    for dims, _ in ranked.page:
        kind, item = dims[-1].split(":", 1)
        out.append((kind, item))
    return out


def popular_rank(days: list[DayFigures], kind: str, limit: int) -> list[dict[str, Any]]:
    """The items that can make the popular list, without their unique viewers: those with at least
    the views of the `limit`-th item (ties on views are then ordered by unique viewers)."""
    if limit <= 0:
        return []
    rows: list[dict[str, Any]] = [
        {"id": key.split(":", 1)[1], "views": v["content_views"], "impressions": v["impressions"]}
        for key, v in _content(days, with_viewers=False).items()
        if key.startswith(kind + ":") and v["content_views"]
    ]
    rows.sort(key=lambda r: -r["views"])
    if len(rows) > limit:
        floor = rows[limit - 1]["views"]
        rows = [r for r in rows if r["views"] >= floor]
    return rows


def popular_finish(
    rows: list[dict[str, Any]], days: list[DayFigures], kind: str, limit: int, more_sketches: Sketches | None = None
) -> list[dict[str, Any]]:
    """The popular list from `popular_rank`'s candidates: views, then unique viewers, then id."""
    for r in rows:
        key = (kind, r["id"])
        r["unique_viewers"] = _viewers(_item_parts(days, key), more_sketches, key)
    rows.sort(key=lambda r: (-r["views"], -r["unique_viewers"], r["id"]))
    fields = ("id", "views", "unique_viewers", "impressions")
    return [{f: r[f] for f in fields} for r in rows[:limit]]


def popular_items(
    days: list[DayFigures], kind: str, limit: int, more_sketches: Sketches | None = None
) -> list[dict[str, Any]]:
    """The most viewed items of one kind: views, then unique viewers, then id. Unique viewers are
    merged only for the candidates (`popular_rank`)."""
    return popular_finish(popular_rank(days, kind, limit), days, kind, limit, more_sketches)

"""Trackside's own API under `/_trackside/api/`: the query API, popular content, realtime
visitors, CSV export, the figures behind the dashboard, and the OpenAPI document. Moderators
(by the site's roles) and the static admin token only.

The query, popular, site and item answers go through the stats endpoints' cache (`_cached`): keyed by
the normalized request, the day and the state of the closed days it covers, read only after
authorization, kept at most 5 s when the answer includes today; `?refresh=true` skips it (once per
caller and answer every 10 s). Figures are as of the read: `computed_at`."""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.openapi import openapi_document
from sidecar.stats_routes import NO_STORE, StatsEndpoints, error, last_days
from trackside.authz import Caller, may_read_metrics
from trackside.figures import DayFigures, rolled_item_sketches
from trackside.stats.cache import ClosedDays, closed_state
from trackside.stats.item import DAYS as ITEM_DAYS
from trackside.stats.query import (
    CONTENT_METRICS,
    Query,
    QueryError,
    finish_query,
    page_items,
    parse_query,
    period_range,
    rank_query,
    run_query,
    viewers_needed,
)
from trackside.stats.series import iso
from trackside.stats.site import COMPUTED_AT, as_of
from trackside.stats.site import DAYS as SITE_DAYS
from trackside.storage.engine import snapshot
from trackside.storage.popular import popular as popular_items
from trackside.storage.reads import recent_page_views

REALTIME_SECONDS = 300


async def _ranked_days(
    conn: AsyncConnection, first: date, last: date, window: float, closed: ClosedDays
) -> tuple[list[DayFigures], DayFigures, list[date]]:
    """The days of a content ranking: each day's site figures; items per day only for days read from
    stored events; the rolled days' items summed by the database into one extra figure (`totals`);
    and which days those are, for their sketches. Closed days' figures and totals come from `closed`
    while their state holds."""
    state = await closed_state(conn, first, last)
    days = await closed.load(conn, first, last, window, state, with_items=True, rolled_items=False)
    rolled = [d.day for d in days if d.rolled]
    totals = DayFigures(first, rolled=True)
    totals.items = await closed.item_totals(conn, rolled, state)
    return days, totals, rolled


PREFIX = "/_trackside/api/v1"


class TracksideApi:
    def __init__(self, stats: StatsEndpoints) -> None:
        self.stats = stats
        self.settings = stats.settings

    def routes(self) -> list[Route]:
        return [
            Route(PREFIX + "/query", self.query, methods=["GET", "POST"]),
            Route(PREFIX + "/popular", self.popular, methods=["GET"]),
            Route(PREFIX + "/realtime", self.realtime, methods=["GET"]),
            Route(PREFIX + "/site", self.site, methods=["GET"]),
            Route(PREFIX + "/items/{kind}/{id}", self.item, methods=["GET"]),
            Route(PREFIX + "/kinds", self.kinds, methods=["GET"]),
            Route("/_trackside/api/openapi.json", self.openapi, methods=["GET"]),
        ]

    async def _moderator(self, request: Request) -> JSONResponse | None:
        asked = await self._asked(request)
        return asked if isinstance(asked, JSONResponse) else None

    async def _asked(self, request: Request) -> tuple[Caller, bool] | JSONResponse:
        """A moderator's (caller, refresh), or the answer refusing them: the same 401/502/400 answers
        as the stats endpoints, then 403. Always before any cache is read."""
        asked = await self.stats._caller_and_refresh(request)
        if isinstance(asked, JSONResponse):
            return asked
        if not asked[0].is_moderator:
            return error(403, "moderators only")
        return asked

    @property
    def window(self) -> float:
        return self.settings.view_window_minutes * 60.0

    async def query(self, request: Request) -> Response:
        asked = await self._asked(request)
        if isinstance(asked, JSONResponse):
            return asked
        caller, refresh = asked
        try:
            raw = await _query_body(request)
            q = parse_query(raw, datetime.now(UTC).date())
        except QueryError as exc:
            return error(400, str(exc))
        result = await self.stats._cached(
            "query:" + _query_key(q), caller, refresh, functools.partial(self._query, q), (q.first, q.last)
        )
        if _wants_csv(request):
            return _csv(result)
        return JSONResponse(result, headers=NO_STORE)

    async def _query(self, q: Query, conn: AsyncConnection, now: datetime) -> dict[str, Any]:
        needs_items = "content" in q.dimensions or any(m in CONTENT_METRICS for m in q.metrics)
        closed = self.stats.closed
        if needs_items and "day" not in q.dimensions:
            days, totals, rolled = await _ranked_days(conn, q.first, q.last, self.window, closed)
            # The rows' order never depends on merged viewers unless they come first: merge the
            # rolled days' sketches of the page's items only, on a second (cheap) pass.
            everything = [*days, totals]
            if "content" not in q.dimensions:
                result = run_query(q, everything)  # site totals merge no item's viewers
            elif viewers_needed(q):
                result = run_query(q, everything, await rolled_item_sketches(conn, rolled, None))
            else:
                ranked = rank_query(q, everything)
                result = finish_query(ranked, await rolled_item_sketches(conn, rolled, page_items(ranked)))
        else:
            state = await closed_state(conn, q.first, q.last)
            days = await closed.load(conn, q.first, q.last, self.window, state, with_items=needs_items)
            result = run_query(q, days)
        result["meta"]["computed_at"] = _computed_at(days, now)
        result["meta"]["definitions"]["computed_at"] = COMPUTED_AT
        return result

    async def popular(self, request: Request) -> Response:
        asked = await self._asked(request)
        if isinstance(asked, JSONResponse):
            return asked
        caller, refresh = asked
        params = request.query_params
        kind = params.get("kind", "artwork")
        if kind not in self.settings.content_rules:
            return error(400, f"kind: one of {', '.join(self.settings.content_rules)}")
        try:
            first, last = period_range(params.get("period", "7d"), datetime.now(UTC).date())
            limit = int(params.get("limit", "10"))
            if not 1 <= limit <= 100:
                raise ValueError
        except QueryError as exc:
            return error(400, str(exc))
        except ValueError:
            return error(400, "limit: an integer between 1 and 100")

        async def compute(conn: AsyncConnection, now: datetime) -> dict[str, Any]:
            # Ranked by the database: the period's items are never all read (`trackside.storage.popular`).
            items, today_read_at = await popular_items(conn, kind, first, last, limit)
            return {
                "kind": kind,
                "period": {"from": first.isoformat(), "to": last.isoformat()},
                "items": items,
                "computed_at": iso(today_read_at or now),
            }

        result = await self.stats._cached(
            f"popular:{kind}:{first}:{last}:{limit}", caller, refresh, compute, (first, last)
        )
        items = result["items"]
        if _wants_csv(request):
            return _csv_rows(["id", "views", "unique_viewers", "impressions"], [list(i.values()) for i in items])
        # Titles and pages are laid over the cached figures (a title may come later than they do).
        result = {**result, "items": await self.stats.titles.with_titles(kind, items)}
        return JSONResponse(result, headers=NO_STORE)

    async def kinds(self, request: Request) -> Response:
        """The settings' content kinds (`TRACKSIDE_CONTENT_RULES`): one dashboard panel each."""
        asked = await self._asked(request)
        if isinstance(asked, JSONResponse):
            return asked
        return JSONResponse({"kinds": self.stats.titles.kinds()}, headers=NO_STORE)

    async def realtime(self, request: Request) -> Response:
        if (denied := await self._moderator(request)) is not None:
            return denied
        async with snapshot(self.stats.engine) as conn:
            rows = await recent_page_views(conn, time.time() - REALTIME_SECONDS)
        pages = Counter(label for _, label in rows)
        return JSONResponse(
            {
                "visitors": len({visitor for visitor, _ in rows}),
                "page_views": len(rows),
                "top_pages": dict(pages.most_common(10)),
                "seconds": REALTIME_SECONDS,
                "definition": "distinct visitor ids with a page view stored in the last 5 minutes",
            },
            headers=NO_STORE,
        )

    async def site(self, request: Request) -> Response:
        asked = await self._asked(request)
        if isinstance(asked, JSONResponse):
            return asked
        body = await self.stats._cached("site", asked[0], asked[1], self.stats.site_figures, last_days(SITE_DAYS))
        return JSONResponse(body, headers=NO_STORE)

    async def item(self, request: Request) -> Response:
        asked = await self._asked(request)
        if isinstance(asked, JSONResponse):
            return asked
        caller, refresh = asked
        kind, item = request.path_params["kind"], request.path_params["id"]
        if kind not in self.settings.content_rules:
            return error(404, f"no such content kind {kind!r}")
        # The same computation, and so the same cache entry, as the item's stats endpoint.
        body = await self.stats._cached(
            f"{kind}:{item}", caller, refresh, self.stats.item_figures(kind, item), last_days(ITEM_DAYS)
        )
        if body is None:
            return error(404, f"no views or impressions of {kind} {item!r} in 30 days")
        found = await self.stats.titles.titles([(kind, item)])
        named = {"title": found.get((kind, item)), "page": self.stats.titles.page(kind, item)}
        return JSONResponse({"kind": kind, "id": item, **named, **body}, headers=NO_STORE)

    async def openapi(self, request: Request) -> Response:
        if not may_read_metrics(self.settings, request.headers.get("authorization")):
            return JSONResponse(
                {"detail": "the metrics token (TRACKSIDE_METRICS_TOKEN) is required as a Bearer token"},
                status_code=401,
                headers={"www-authenticate": "Bearer", **NO_STORE},
            )
        return JSONResponse(openapi_document())


def _computed_at(days: list[Any], now: datetime) -> str | None:
    return iso(as_of(days, now.date()) or now)


def _query_key(q: Query) -> str:
    """The normalized query: equal for requests that ask the same (GET or POST, any spelling)."""
    return json.dumps(
        [q.metrics, q.dimensions, q.first, q.last, q.filters, q.limit, q.offset, q.order_desc],
        default=lambda v: v.isoformat() if isinstance(v, date) else str(v),
        separators=(",", ":"),
    )


async def _query_body(request: Request) -> dict[str, Any]:
    if request.method == "POST":
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise QueryError("body", "not valid JSON") from None
        except RecursionError:  # thousands of nested arrays: no query is that deep
            raise QueryError("body", "nested too deeply") from None
        if not isinstance(body, dict):
            raise QueryError("body", "a JSON object is expected")
        return body
    params = request.query_params
    raw: dict[str, Any] = {}
    for name in ("metrics", "dimensions", "limit", "offset", "order"):
        if name in params:
            raw[name] = params[name]
    if "period" in params:
        raw["period"] = params["period"]
    if "filters" in params:
        try:
            raw["filters"] = json.loads(params["filters"])
        except (ValueError, RecursionError):
            raise QueryError("filters", 'JSON, e.g. [["is","country",["GB"]]]') from None
    return raw


def _wants_csv(request: Request) -> bool:
    return request.query_params.get("format") == "csv" or "text/csv" in request.headers.get("accept", "")


def _csv(result: dict[str, Any]) -> Response:
    header = list(result["meta"]["dimensions"]) + list(result["meta"]["metrics"])
    return _csv_rows(header, [r["dimensions"] + r["metrics"] for r in result["results"]])


# A cell starting with one of these is a formula to a spreadsheet (`=HYPERLINK(...)`, `@SUM(...)`, and
# `+`/`-` start one too; a tab or CR can hide the character that follows): recorded referrers, UTM values and
# item ids come from visitors, so such a string is prefixed with a quote (OWASP's CSV injection advice).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: numbers stay numbers (-3 stays -3)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_rows(header: list[str], rows: list[list[Any]]) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([_cell(h) for h in header])
    writer.writerows([_cell(v) for v in row] for row in rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={**NO_STORE, "content-disposition": 'attachment; filename="trackside.csv"'},
    )

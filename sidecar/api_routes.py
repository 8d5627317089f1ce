"""Trackside's own API under `/_trackside/api/`: the query API, popular content, realtime
visitors, CSV export, the figures behind the dashboard, and the OpenAPI document. Moderators
(by the site's roles) and the static admin token only."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.openapi import openapi_document
from sidecar.stats_routes import NO_STORE, StatsEndpoints, error
from trackside.figures import load_days
from trackside.stats.item import item_stats
from trackside.stats.query import CONTENT_METRICS, QueryError, parse_query, period_range, popular_items, run_query
from trackside.stats.site import site_stats
from trackside.storage.engine import snapshot
from trackside.storage.reads import recent_page_views

REALTIME_SECONDS = 300
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
            Route("/_trackside/api/openapi.json", self.openapi, methods=["GET"]),
        ]

    async def _moderator(self, request: Request) -> JSONResponse | None:
        caller = await self.stats._caller(request)  # the same 401/502 answers as the stats endpoints
        if isinstance(caller, JSONResponse):
            return caller
        if not caller.is_moderator:
            return error(403, "moderators only")
        return None

    @property
    def window(self) -> float:
        return self.settings.view_window_minutes * 60.0

    async def query(self, request: Request) -> Response:
        if (denied := await self._moderator(request)) is not None:
            return denied
        try:
            raw = await _query_body(request)
            q = parse_query(raw, datetime.now(UTC).date())
        except QueryError as exc:
            return error(400, str(exc))
        needs_items = "content" in q.dimensions or any(m in CONTENT_METRICS for m in q.metrics)
        async with snapshot(self.stats.engine) as conn:
            days = await load_days(
                conn,
                q.first,
                q.last,
                self.window,
                with_items=needs_items,
                today_elsewhere=self.stats.today,
            )
        result = run_query(q, days)
        if _wants_csv(request):
            return _csv(result)
        return JSONResponse(result, headers=NO_STORE)

    async def popular(self, request: Request) -> Response:
        if (denied := await self._moderator(request)) is not None:
            return denied
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
        async with snapshot(self.stats.engine) as conn:
            days = await load_days(conn, first, last, self.window, today_elsewhere=self.stats.today)
        items = popular_items(days, kind, limit)
        result = {"kind": kind, "period": {"from": first.isoformat(), "to": last.isoformat()}, "items": items}
        if _wants_csv(request):
            return _csv_rows(["id", "views", "unique_viewers", "impressions"], [list(i.values()) for i in items])
        return JSONResponse(result, headers=NO_STORE)

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
        if (denied := await self._moderator(request)) is not None:
            return denied
        caller = await self.stats.authorizer.caller(request.headers.get("authorization"))
        body = await self.stats._cached(
            "site",
            caller,
            False,
            lambda conn, now: site_stats(conn, now=now, window_seconds=self.window, today_elsewhere=self.stats.today),
        )
        return JSONResponse(body, headers=NO_STORE)

    async def item(self, request: Request) -> Response:
        if (denied := await self._moderator(request)) is not None:
            return denied
        kind, item = request.path_params["kind"], request.path_params["id"]
        if kind not in self.settings.content_rules:
            return error(404, f"no such content kind {kind!r}")
        async with snapshot(self.stats.engine) as conn:
            body = await item_stats(conn, kind, item, now=datetime.now(UTC), window_seconds=self.window)
        if body is None:
            return error(404, f"no views or impressions of {kind} {item!r} in 30 days")
        return JSONResponse({"kind": kind, "id": item, **body}, headers=NO_STORE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


async def _query_body(request: Request) -> dict[str, Any]:
    if request.method == "POST":
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise QueryError("body", "not valid JSON") from None
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
        except ValueError:
            raise QueryError("filters", 'JSON, e.g. [["is","country",["GB"]]]') from None
    return raw


def _wants_csv(request: Request) -> bool:
    return request.query_params.get("format") == "csv" or "text/csv" in request.headers.get("accept", "")


def _csv(result: dict[str, Any]) -> Response:
    header = list(result["meta"]["dimensions"]) + list(result["meta"]["metrics"])
    return _csv_rows(header, [r["dimensions"] + r["metrics"] for r in result["results"]])


def _csv_rows(header: list[str], rows: list[list[Any]]) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={**NO_STORE, "content-disposition": 'attachment; filename="trackside.csv"'},
    )

"""`POST /_trackside/api/v2/journeys` (the pages before and after a chosen page, `trackside.stats.journeys`)
and `GET /_trackside/api/v2/retention?weeks=12` (signed-in users' weekly cohorts,
`trackside.stats.retention`). The v2 query's callers (moderators, the admin token, `read` API keys),
authorized before the body is read; errors are `{"error": "..."}` as the v2 query's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.stats_routes import NO_STORE, StatsEndpoints
from trackside.stats.journeys import MEANING, journeys, parse_journey
from trackside.stats.retention import MAX_WEEKS, retention_grid
from trackside.stats.v2.engine import QueryTimeout, _deadline, limits_of, load_goals
from trackside.stats.v2.schema import V2Error
from trackside.storage.engine import snapshot

JOURNEYS_ROUTE = "/_trackside/api/v2/journeys"
RETENTION_ROUTE = "/_trackside/api/v2/retention"
MAX_BODY = 64 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


class JourneyApi:
    def __init__(self, stats: StatsEndpoints) -> None:
        self.stats = stats
        self.settings = stats.settings

    def routes(self) -> list[Route]:
        return [
            Route(JOURNEYS_ROUTE, self.journeys, methods=["POST"]),
            Route(RETENTION_ROUTE, self.retention, methods=["GET"]),
        ]

    async def _refused(self, request: Request) -> JSONResponse | None:
        caller = await self.stats._caller(request)
        if isinstance(caller, JSONResponse):
            return _error(caller.status_code, json.loads(bytes(caller.body))["detail"])
        if not caller.is_moderator:
            return _error(403, "moderators, the admin token or a read API key only")
        return None

    async def journeys(self, request: Request) -> Response:
        refused = await self._refused(request)
        if refused is not None:
            return refused
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, f"the query is larger than {MAX_BODY // 1024} KB")
        try:
            raw = json.loads(body or b"null")
        except ValueError:
            return _error(400, "the body is not valid JSON")
        except RecursionError:
            return _error(400, "the body is nested too deeply")
        limits = limits_of(self.settings)
        try:
            jq = parse_journey(raw, datetime.now(UTC).date())
            pending = await self.stats.derive_queued(jq.first, jq.last)
            async with snapshot(self.stats.engine) as conn:
                async with _deadline(conn, limits.timeout_seconds):
                    goals = await load_goals(conn, self.settings)
                    result: dict[str, Any] = await journeys(conn, jq, goals)
        except V2Error as exc:
            return _error(400, str(exc))
        except QueryTimeout as exc:
            return _error(503, str(exc))
        result["meta"] = MEANING if not pending.visitor_days else {**MEANING, "pending": pending.meta()}
        result["query"] = {
            "date_range": jq.date_range,
            "filters": jq.raw_filters,
            **({"label": jq.label} if jq.label is not None else {"page": jq.page}),
            "limit": jq.limit,
        }
        return JSONResponse(result, headers=NO_STORE)

    async def retention(self, request: Request) -> Response:
        refused = await self._refused(request)
        if refused is not None:
            return refused
        raw = request.query_params.get("weeks", "12")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_WEEKS:
            return _error(400, f"weeks is a whole number from 1 to {MAX_WEEKS}")
        limits = limits_of(self.settings)
        try:
            async with snapshot(self.stats.engine) as conn:
                async with _deadline(conn, limits.timeout_seconds):
                    result = await retention_grid(conn, int(raw), datetime.now(UTC).date())
        except QueryTimeout as exc:
            return _error(503, str(exc))
        return JSONResponse(result, headers=NO_STORE)

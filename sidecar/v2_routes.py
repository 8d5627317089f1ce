"""`POST /_trackside/api/v2/query`: Plausible's Stats API v2 (the subset in the README), answered live
from fact rows. The same callers as the v1 query API: moderators, the admin token and `read` API
keys, authorized before the body is read. Errors are Plausible's shape, `{"error": "..."}`."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.stats_routes import NO_STORE, StatsEndpoints
from sidecar.titles import take_titles
from trackside.stats.v2.engine import QueryTimeout, answer, limits_of, load_goals
from trackside.stats.v2.schema import V2Error, parse

ROUTE = "/_trackside/api/v2/query"
MAX_BODY = 256 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


class QueryApiV2:
    def __init__(self, stats: StatsEndpoints) -> None:
        self.stats = stats
        self.settings = stats.settings

    def routes(self) -> list[Route]:
        return [Route(ROUTE, self.query, methods=["POST"])]

    async def query(self, request: Request) -> Response:
        caller = await self.stats._caller(request)
        if isinstance(caller, JSONResponse):
            return _error(caller.status_code, json.loads(bytes(caller.body))["detail"])
        if not caller.is_moderator:
            return _error(403, "moderators, the admin token or a read API key only")
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, f"the query is larger than {MAX_BODY // 1024} KB")
        try:
            raw = json.loads(body or b"null")
        except ValueError:
            return _error(400, "the body is not valid JSON")
        except RecursionError:
            return _error(400, "the body is nested too deeply")
        try:
            titles, raw = take_titles(raw)  # include.titles: the items' titles and pages (sidecar.titles)
            q = parse(raw, datetime.now(UTC).date())
            if q.first is not None:
                await self.stats.derive_queued(q.first, q.last)
            goals = functools.partial(load_goals, settings=self.settings)
            result = await answer(self.stats.engine, q, limits_of(self.settings), goals)
            if titles:
                await self.stats.titles.v2_titles(result, q)
        except V2Error as exc:
            return _error(400, str(exc))
        except QueryTimeout as exc:
            return _error(503, str(exc))
        return JSONResponse(result, headers=NO_STORE)

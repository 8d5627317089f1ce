"""`POST /_trackside/api/v2/query`: Plausible's Stats API v2 (the subset in the README), answered live
from fact rows. The same callers as the v1 query API: moderators, the admin token and `read` API
keys, authorized before the body is read. Errors are Plausible's shape, `{"error": "..."}`."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.stats_routes import NO_STORE, StatsEndpoints
from sidecar.titles import take_titles
from trackside.figures import Pending
from trackside.stats.v2.engine import QueryTimeout, answer, limits_of, load_goals
from trackside.stats.v2.schema import V2Error, parse

ROUTE = "/_trackside/api/v2/query"
BATCH_ROUTE = "/_trackside/api/v2/batch"
MAX_BODY = 256 * 1024
MAX_BATCH_BODY = 1024 * 1024
MAX_BATCH = 50
# Queries of one batch answered at once (each on a connection of its own).
BATCH_CONCURRENCY = 4


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


class QueryApiV2:
    def __init__(self, stats: StatsEndpoints) -> None:
        self.stats = stats
        self.settings = stats.settings

    def routes(self) -> list[Route]:
        return [Route(ROUTE, self.query, methods=["POST"]), Route(BATCH_ROUTE, self.batch, methods=["POST"])]

    async def _authorized(self, request: Request) -> JSONResponse | None:
        """The refusal of a caller who may not query (before any body is read), else None."""
        caller = await self.stats._caller(request)
        if isinstance(caller, JSONResponse):
            return _error(caller.status_code, json.loads(bytes(caller.body))["detail"])
        if not caller.is_moderator:
            return _error(403, "moderators, the admin token or a read API key only")
        return None

    async def _body(self, request: Request, limit: int) -> Any:
        """The JSON body, or the refusal of it (a JSONResponse)."""
        body = await request.body()
        if len(body) > limit:
            return _error(413, f"the query is larger than {limit // 1024} KB")
        try:
            return json.loads(body or b"null")
        except ValueError:
            return _error(400, "the body is not valid JSON")
        except RecursionError:
            return _error(400, "the body is nested too deeply")

    async def query(self, request: Request) -> Response:
        if (refused := await self._authorized(request)) is not None:
            return refused
        raw = await self._body(request, MAX_BODY)
        if isinstance(raw, JSONResponse):
            return raw
        status, result = await self._answer(raw, derived={})
        return JSONResponse(result, status_code=status, headers=NO_STORE)

    async def batch(self, request: Request) -> Response:
        """`POST /_trackside/api/v2/batch` `{"queries": [<a v2 query>, ...]}` (at most MAX_BATCH): the same
        callers and the same answers as the query API, in one request, in the queries' order:
        `{"results": [{"status": 200, "answer": {...}}, {"status": 400, "error": "queries[1]: ..."}, ...]}`.
        A refused query is answered as the query API would (400, 503), named by its place; the others
        are answered all the same. The whole batch is refused only for what is not a batch: the caller
        (401, 403), a body that is not JSON or too large, no `queries` list, too many queries."""
        if (refused := await self._authorized(request)) is not None:
            return refused
        raw = await self._body(request, MAX_BATCH_BODY)
        if isinstance(raw, JSONResponse):
            return raw
        queries = raw.get("queries") if isinstance(raw, dict) else None
        if not isinstance(queries, list) or not queries:
            return _error(400, 'the body is {"queries": [<a v2 query>, ...]}: a list of one query or more')
        if len(queries) > MAX_BATCH:
            return _error(400, f"queries: at most {MAX_BATCH} in one batch, not {len(queries)}")
        derived: dict[tuple[date, date], asyncio.Future[Pending]] = {}
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(n: int, entry: Any) -> dict[str, Any]:
            async with gate:
                status, result = await self._answer(entry, derived)
            if status != 200:
                return {"status": status, "error": f"queries[{n}]: {result['error']}"}
            return {"status": 200, "answer": result}

        results = await asyncio.gather(*(one(n, entry) for n, entry in enumerate(queries)))
        return JSONResponse({"results": list(results)}, headers=NO_STORE)

    async def _answer(
        self, raw: Any, derived: dict[tuple[date, date], asyncio.Future[Pending]]
    ) -> tuple[int, dict[str, Any]]:
        """One query's (status, answer or {"error": ...}). `derived`: the ranges whose queued visitor-days
        were derived by this request already (a batch derives each range once)."""
        try:
            titles, raw = take_titles(raw)  # include.titles: the items' titles and pages (sidecar.titles)
            q = parse(raw, datetime.now(UTC).date())
            pending = Pending()
            if q.first is not None:
                if (q.first, q.last) not in derived:
                    derived[q.first, q.last] = asyncio.ensure_future(self.stats.derive_queued(q.first, q.last))
                pending = await derived[q.first, q.last]
            goals = functools.partial(load_goals, settings=self.settings)
            result = await answer(self.stats.engine, q, limits_of(self.settings), goals)
            if pending.visitor_days:
                result["meta"]["pending"] = pending.meta()
            if titles:
                await self.stats.titles.v2_titles(result, q)
        except V2Error as exc:
            return 400, {"error": str(exc)}
        except QueryTimeout as exc:
            return 503, {"error": str(exc)}
        return 200, result

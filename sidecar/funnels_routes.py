"""Funnels over HTTP.

`POST /_trackside/api/v2/funnel` answers a funnel (`trackside.stats.v2.funnel`): `{"date_range",
"steps", "filters"}`, date range and filters as the v2 query's. The same callers as the v2 query
(moderators, the admin token, read API keys, share tokens), authorized before the body is read;
errors are `{"error": "..."}` (400 naming the problem, 503 past the query timeout).

`/_trackside/api/funnels`: GET lists the named funnels with their origin (the settings or the
database); POST `{"name", "steps"}` stores one (201; 400 naming the bad field or an unknown goal;
409 when the name is taken); DELETE `/_trackside/api/funnels/{name}` (or `?name=`) removes a stored
one (204; 404; 409 for one of the settings). A read API key or a share token may list, not change."""

from __future__ import annotations

import functools
import json
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.definitions_api import DefinitionsApi
from sidecar.stats_routes import NO_STORE, error
from trackside.funnels import FunnelConflict, FunnelError, add_funnel, check_funnel, list_funnels, remove_funnel
from trackside.goals import load_goals
from trackside.stats.v2.engine import QueryTimeout, limits_of
from trackside.stats.v2.funnel import answer_funnel, parse_funnel, resolve_goals
from trackside.stats.v2.schema import V2Error
from trackside.storage.engine import writing

logger = logging.getLogger("trackside.sidecar")

QUERY_ROUTE = "/_trackside/api/v2/funnel"
ROUTE = "/_trackside/api/funnels"
MAX_BODY = 64 * 1024


def _v2_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


class FunnelsApi(DefinitionsApi):
    noun = "funnel"
    route = ROUTE

    def routes(self) -> list[Route]:
        return [Route(QUERY_ROUTE, self.query, methods=["POST"]), *super().routes()]

    async def query(self, request: Request) -> Response:
        caller = await self.stats._caller(request)
        if isinstance(caller, JSONResponse):
            return _v2_error(caller.status_code, json.loads(bytes(caller.body))["detail"])
        if not caller.is_moderator:
            return _v2_error(403, "moderators, the admin token or a read API key only")
        body = await request.body()
        if len(body) > MAX_BODY:
            return _v2_error(413, f"the funnel is larger than {MAX_BODY // 1024} KB")
        try:
            raw = json.loads(body or b"null")
        except ValueError:
            return _v2_error(400, "the body is not valid JSON")
        except RecursionError:
            return _v2_error(400, "the body is nested too deeply")
        try:
            fq = parse_funnel(raw, datetime.now(UTC).date())
            pending = None
            if fq.q.first is not None:
                pending = await self.stats.derive_queued(fq.q.first, fq.q.last)
            goals = functools.partial(load_goals, settings=self.settings)
            result = await answer_funnel(self.stats.engine, fq, limits_of(self.settings), goals)
            if pending is not None and pending.visitor_days:
                result["meta"]["pending"] = pending.meta()
        except V2Error as exc:
            return _v2_error(400, str(exc))
        except QueryTimeout as exc:
            return _v2_error(503, str(exc))
        return JSONResponse(result, headers=NO_STORE)

    async def _list(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        return [f.as_dict() for f in await list_funnels(conn, self.settings)]

    async def _add(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(413, f"a funnel is at most {MAX_BODY // 1024} KB of JSON")
        try:
            raw: Any = json.loads(body or b"null")
        except ValueError:
            return error(400, "body: a JSON object {name, steps}")
        except RecursionError:
            return error(400, "body: nested too deeply")
        if not isinstance(raw, dict):
            return error(400, "body: a JSON object {name, steps}")
        unknown = sorted(set(raw) - {"name", "steps"})
        if unknown:
            return error(400, f"{unknown[0]}: unknown field (name, steps)")
        try:
            funnel = check_funnel(raw.get("name"), raw.get("steps"))
        except FunnelError as exc:
            return error(400, str(exc))
        try:
            async with writing(self.stats.engine) as conn:  # reads, then writes
                resolve_goals(funnel.steps, await load_goals(conn, self.settings))
                stored = await add_funnel(conn, self.settings, funnel)
        except V2Error as exc:
            return error(400, str(exc))
        except FunnelConflict as exc:
            return error(409, str(exc))
        return JSONResponse(stored.as_dict(), status_code=201, headers=NO_STORE)

    async def _remove(self, name: str) -> Response:
        try:
            async with writing(self.stats.engine) as conn:  # reads, then writes
                removed = await remove_funnel(conn, self.settings, name)
        except FunnelConflict as exc:
            return error(409, str(exc))
        if not removed:
            return error(404, f"no stored funnel {name[:80]!r}")
        return Response(status_code=204, headers=NO_STORE)

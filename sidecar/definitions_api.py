"""What the goals and funnels APIs share: a named collection that moderators list, add to and
remove from (`GET`, `POST`, `DELETE .../{name}` or `?name=`), over definitions that come from the
settings or the database. Each API says how a body becomes a definition and how one is stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.stats_routes import NO_STORE, StatsEndpoints, error


class DefinitionsApi:
    noun = "definition"  # "goal", "funnel": in the messages
    route = ""

    def __init__(self, stats: StatsEndpoints) -> None:
        self.stats = stats
        self.settings = stats.settings

    def routes(self) -> list[Route]:
        return [
            Route(self.route, self.collection, methods=["GET", "POST", "DELETE"]),
            Route(self.route + "/{name}", self.one, methods=["DELETE"]),
        ]

    async def _refused(self, request: Request, *, changes: bool) -> JSONResponse | None:
        return await self.stats.refused_to_edit(request, self.noun + "s", changes=changes)

    async def collection(self, request: Request) -> Response:
        refused = await self._refused(request, changes=request.method != "GET")
        if refused is not None:
            return refused
        if request.method == "POST":
            return await self._add(request)
        if request.method == "DELETE":
            name = request.query_params.get("name")
            if not name:
                return error(400, f"name: give the {self.noun}'s name, {self.route}/{{name}} or ?name=")
            return await self._remove(name)
        async with self.stats.engine.connect() as conn:
            found = await self._list(conn)
        return JSONResponse({self.noun + "s": found}, headers=NO_STORE)

    async def one(self, request: Request) -> Response:
        refused = await self._refused(request, changes=True)
        if refused is not None:
            return refused
        return await self._remove(request.path_params["name"])

    async def _list(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def _add(self, request: Request) -> Response:
        raise NotImplementedError

    async def _remove(self, name: str) -> Response:
        raise NotImplementedError

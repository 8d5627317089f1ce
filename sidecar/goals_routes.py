"""`/_trackside/api/goals`: moderators list, add and remove goals (`trackside.goals`).

GET lists every goal with its origin (the settings or the database); POST `{"name", "kind": "event"
or "page", "match"}` adds one (201; 400 naming the bad field; 409 when the name is taken, in the
database or the settings); DELETE `/_trackside/api/goals/{name}` (or `?name=`) removes a stored one
(204; 404 when there is none; 409 for a goal of the settings, which only the settings change).

Who: the same callers as the rest of Trackside's API (a moderator's token, the admin token); a read
API key or a share token may list goals but not change them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sidecar.definitions_api import DefinitionsApi
from sidecar.stats_routes import NO_STORE, error
from trackside.goals import GoalConflict, GoalError, add_goal, check_goal, list_goals, remove_goal
from trackside.storage.engine import writing

ROUTE = "/_trackside/api/goals"
MAX_BODY = 16 * 1024


class GoalsApi(DefinitionsApi):
    noun = "goal"
    route = ROUTE

    async def _list(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        return [g.as_dict() for g in await list_goals(conn, self.settings)]

    async def _add(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(413, f"a goal is at most {MAX_BODY} bytes of JSON")
        try:
            raw: Any = json.loads(body or b"null")
        except ValueError:
            return error(400, "body: a JSON object {name, kind, match}")
        except RecursionError:  # thousands of nested arrays: a ValueError's sibling, not a child
            return error(400, "body: nested too deeply")
        if not isinstance(raw, dict):
            return error(400, "body: a JSON object {name, kind, match}")
        unknown = sorted(set(raw) - {"name", "kind", "match"})
        if unknown:
            return error(400, f"{unknown[0]}: unknown field (name, kind, match)")
        for field in ("name", "kind", "match"):
            if not isinstance(raw.get(field), str):
                return error(400, f"{field}: required, a string")
        try:
            goal = check_goal(raw["name"], raw["kind"], raw["match"])
        except GoalError as exc:
            return error(400, str(exc))
        try:
            async with writing(self.stats.engine) as conn:  # reads, then writes
                stored = await add_goal(conn, self.settings, goal)
        except GoalConflict as exc:
            return error(409, str(exc))
        return JSONResponse(stored.as_dict(), status_code=201, headers=NO_STORE)

    async def _remove(self, name: str) -> Response:
        try:
            async with writing(self.stats.engine) as conn:  # reads, then writes
                removed = await remove_goal(conn, self.settings, name)
        except GoalConflict as exc:
            return error(409, str(exc))
        if not removed:
            return error(404, f"no stored goal {name[:80]!r}")
        return Response(status_code=204, headers=NO_STORE)
